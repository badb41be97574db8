//! Sending an Ethernet frame on an interface through an `AF_PACKET` socket.
//!
//! socket2 has no safe constructor for `sockaddr_ll`, so the address is built in place
//! in a zeroed `sockaddr_storage`; that is the only `unsafe` of lb-ha.

use std::io;

use socket2::{Domain, SockAddr, SockAddrStorage, Socket, Type};

/// A raw packet socket that sends whole Ethernet frames (header included).
#[derive(Debug)]
pub(crate) struct PacketSocket {
    socket: Socket,
    ifindex: u32,
}

impl PacketSocket {
    /// Opens a socket sending on interface index `ifindex`. Needs CAP_NET_RAW.
    pub(crate) fn open(ifindex: u32) -> io::Result<Self> {
        // Protocol 0: this socket only sends, it receives nothing.
        let socket = Socket::new(Domain::PACKET, Type::RAW, None)?;
        Ok(PacketSocket { socket, ifindex })
    }

    /// Sends `frame` (destination MAC, source MAC, ethertype, payload) as is.
    pub(crate) fn send(&self, frame: &[u8]) -> io::Result<()> {
        if frame.len() < 14 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "frame shorter than an ethernet header",
            ));
        }
        let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
        let mut storage = SockAddrStorage::zeroed();
        // SAFETY: `sockaddr_ll` is one of the platform's `sockaddr_*` types and is smaller
        // than `sockaddr_storage` (view_as asserts the size); the storage is zeroed, a
        // valid bit pattern for every field of `sockaddr_ll`.
        let ll = unsafe { storage.view_as::<libc::sockaddr_ll>() };
        ll.sll_family = libc::AF_PACKET as u16;
        ll.sll_protocol = ethertype.to_be();
        ll.sll_ifindex = i32::try_from(self.ifindex).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "interface index out of range")
        })?;
        ll.sll_halen = 6;
        ll.sll_addr[..6].copy_from_slice(&frame[..6]);
        let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: the storage holds an initialised `sockaddr_ll` with family AF_PACKET,
        // and `len` is exactly its size.
        let addr = unsafe { SockAddr::new(storage, len) };
        let n = self.socket.send_to(frame, &addr)?;
        if n != frame.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "short write of a frame",
            ));
        }
        Ok(())
    }
}
