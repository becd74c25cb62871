//! Read buffers kept per thread between requests: HAProxy's buffer pools.
//!
//! A connection holds a read buffer only while bytes are in it (that is
//! what keeps an idle keep-alive connection or an open SSE stream at a few
//! KiB), so without a pool every request allocates its buffers afresh: the
//! client's, and the one the upstream's response head is read into. Given
//! back once empty, a buffer serves the next request on the same thread,
//! still warm in cache; and one that has been split (a head taken off it)
//! stays shareable, so the next split costs no allocation either.
//!
//! The buffers a request's bytes are written into on their way out (the
//! request head for the upstream, the response head for the client, each
//! with the body bytes that go along) are kept the same way. Warm is the
//! point: mimalloc hands a freed block out again only after the rest of its
//! page, so a fresh allocation is usually memory the CPU has not touched
//! for a while, and writing into it misses the cache.

use std::cell::RefCell;

use bytes::BytesMut;

/// The size of every pooled buffer: room for a request or response head
/// and a small body.
pub const SIZE: usize = 4096;
/// Buffers kept per thread, about as many as one thread has requests
/// between head and response at once; any more are freed.
const KEPT: usize = 64;

/// Write buffers larger than this are freed, not kept.
const OUT_KEPT_MAX: usize = 2 * SIZE;

thread_local! {
    static POOL: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
    static OUT: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// An empty write buffer with room for at least `capacity` bytes.
pub fn take_out(capacity: usize) -> Vec<u8> {
    match OUT.with(|p| p.borrow_mut().pop()) {
        Some(mut out) => {
            out.reserve(capacity);
            out
        }
        None => Vec::with_capacity(capacity.max(SIZE)),
    }
}

/// Lets go of a write buffer whose bytes have been written.
pub fn give_back_out(mut out: Vec<u8>) {
    if out.capacity() < SIZE || out.capacity() > OUT_KEPT_MAX {
        return;
    }
    out.clear();
    OUT.with(|p| {
        let mut pool = p.borrow_mut();
        if pool.len() < KEPT {
            pool.push(out);
        }
    });
}

/// An empty buffer with room for [`SIZE`] bytes.
fn take() -> BytesMut {
    POOL.with(|p| p.borrow_mut().pop())
        .unwrap_or_else(|| BytesMut::with_capacity(SIZE))
}

/// Makes room to read into `buf`: a pooled buffer when it has none (it
/// was let go while empty), else 4 KiB more.
pub fn room_to_read(buf: &mut BytesMut) {
    if buf.capacity() == 0 {
        *buf = take();
    } else {
        buf.reserve(SIZE);
    }
}

/// Lets go of `buf` (its contents are done with): back to the pool when
/// its whole allocation is a pooled buffer's, otherwise freed.
pub fn give_back(mut buf: BytesMut) {
    buf.clear();
    // Reclaiming never allocates. Room for `SIZE` bytes but not one more
    // means the allocation is exactly `SIZE` and this handle has all of it
    // back: a buffer a large body made grow, or whose bytes another handle
    // still holds, is not kept.
    let whole = buf.try_reclaim(SIZE) && !buf.try_reclaim(SIZE + 1) && buf.capacity() == SIZE;
    if whole {
        POOL.with(|p| {
            let mut pool = p.borrow_mut();
            if pool.len() < KEPT {
                pool.push(buf);
            }
        });
    }
}

/// Lets go of a connection's read buffer once it is empty (nothing
/// pipelined behind the request just served).
pub fn release_if_empty(buf: &mut BytesMut) {
    if buf.is_empty() {
        give_back(std::mem::take(buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Buf;

    fn pooled() -> usize {
        POOL.with(|p| p.borrow().len())
    }

    #[test]
    fn a_buffer_comes_back_whole_after_its_head_is_split_off() {
        let mut buf = take();
        buf.extend_from_slice(b"GET / HTTP/1.1\r\n\r\nrest");
        let head = buf.split_to(18).freeze();
        buf.advance(4);
        let before = pooled();
        // The head still holds the buffer's first bytes: not kept.
        give_back(std::mem::take(&mut buf));
        assert_eq!(pooled(), before);

        let mut buf = take();
        buf.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let head2 = buf.split_to(18).freeze();
        drop(head2);
        let at = buf.as_ptr();
        give_back(buf);
        assert_eq!(pooled(), before + 1);
        let again = take();
        assert_eq!(again.capacity(), SIZE);
        assert!(again.is_empty());
        assert_eq!(
            again.as_ptr(),
            at.wrapping_sub(18),
            "the same allocation, from its start"
        );
        drop(head);
    }

    #[test]
    fn a_grown_buffer_is_freed_not_kept() {
        let mut buf = take();
        buf.extend_from_slice(&[b'x'; SIZE]);
        buf.reserve(16 * 1024);
        buf.extend_from_slice(b"more");
        let before = pooled();
        give_back(buf);
        assert_eq!(pooled(), before);
        give_back(BytesMut::with_capacity(SIZE / 2));
        assert_eq!(pooled(), before);
    }

    #[test]
    fn write_buffers_come_back_empty_and_large_ones_are_freed() {
        let mut out = take_out(100);
        assert!(out.capacity() >= SIZE);
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        let at = out.as_ptr();
        give_back_out(out);
        let again = take_out(10);
        assert!(again.is_empty());
        assert_eq!(again.as_ptr(), at, "the one just given back");
        let kept = || OUT.with(|p| p.borrow().len());
        let before = kept();
        give_back_out(take_out(64 * 1024));
        assert_eq!(kept(), before);
        give_back_out(again);
        assert_eq!(kept(), before + 1);
    }

    #[test]
    fn release_keeps_a_pipelined_request() {
        let mut buf = take();
        buf.extend_from_slice(b"GET /next");
        release_if_empty(&mut buf);
        assert_eq!(&buf[..], b"GET /next");
        buf.clear();
        release_if_empty(&mut buf);
        assert_eq!(buf.capacity(), 0);
    }
}
