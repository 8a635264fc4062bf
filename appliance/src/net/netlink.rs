//! Interface lookup and address add/remove over rtnetlink (what `ip link show` and
//! `ip addr add|del` do), without running `ip`.
//!
//! Errors are plain `io::Error`s carrying the kernel's errno, so callers can tell "no such
//! interface" (ENODEV) and "not permitted" (EPERM) apart and add the resource's name.

use std::io;
use std::net::IpAddr;

use futures_util::stream::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage};
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::Handle;

use crate::config::Cidr;
use crate::net::Mac;

/// What the VIP code needs to know about an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// `None` on interfaces without an Ethernet address (loopback has all zeros, tunnels none).
    pub mac: Option<Mac>,
}

/// A route-netlink connection in the calling thread's network namespace. Its driver task runs
/// on the current tokio runtime and ends when the connection is dropped.
pub struct Netlink {
    handle: Handle,
}

fn to_io(err: rtnetlink::Error) -> io::Error {
    match err {
        rtnetlink::Error::NetlinkError(msg) => msg.to_io(),
        other => io::Error::other(other.to_string()),
    }
}

fn link_from_message(msg: &LinkMessage) -> Link {
    let mut link = Link { index: msg.header.index, name: String::new(), mac: None };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(name) => link.name.clone_from(name),
            LinkAttribute::Address(bytes) => {
                link.mac = <[u8; 6]>::try_from(bytes.as_slice()).ok().map(Mac);
            }
            _ => {}
        }
    }
    link
}

fn message_has_address(msg: &AddressMessage, ip: IpAddr) -> bool {
    msg.attributes.iter().any(|a| matches!(a, AddressAttribute::Address(x) | AddressAttribute::Local(x) if *x == ip))
}

impl Netlink {
    /// Opens the socket. Must be called inside a tokio runtime.
    pub fn open() -> io::Result<Self> {
        let (connection, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(connection);
        Ok(Netlink { handle })
    }

    /// The interface called `name`; errno ENODEV when there is none.
    pub async fn link_by_name(&self, name: &str) -> io::Result<Link> {
        let mut links = self.handle.link().get().match_name(name.to_string()).execute();
        match links.try_next().await {
            Ok(Some(msg)) => Ok(link_from_message(&msg)),
            Ok(None) => Err(io::Error::from_raw_os_error(libc::ENODEV)),
            Err(e) => Err(to_io(e)),
        }
    }

    /// The interface with index `index`.
    pub async fn link_by_index(&self, index: u32) -> io::Result<Link> {
        let mut links = self.handle.link().get().match_index(index).execute();
        match links.try_next().await {
            Ok(Some(msg)) => Ok(link_from_message(&msg)),
            Ok(None) => Err(io::Error::from_raw_os_error(libc::ENODEV)),
            Err(e) => Err(to_io(e)),
        }
    }

    /// Every assignment of `ip`, on any interface of this namespace.
    async fn assignments(&self, ip: IpAddr) -> io::Result<Vec<AddressMessage>> {
        // The kernel cannot filter address dumps; rtnetlink filters them on our side.
        let dump = self.handle.address().get().set_address_filter(ip).execute();
        let all: Vec<AddressMessage> = dump.try_collect().await.map_err(to_io)?;
        Ok(all.into_iter().filter(|m| message_has_address(m, ip)).collect())
    }

    /// Indexes of the interfaces that carry `ip` (usually none or one).
    pub async fn interfaces_with(&self, ip: IpAddr) -> io::Result<Vec<u32>> {
        let mut indexes: Vec<u32> = self.assignments(ip).await?.iter().map(|m| m.header.index).collect();
        indexes.dedup();
        Ok(indexes)
    }

    /// Adds `cidr` to interface `index`. Adding an address that is already there succeeds.
    /// With `nodad` the address is usable at once (IPv6 skips duplicate address detection,
    /// which would otherwise hold it "tentative" for about a second).
    pub async fn add_address(&self, index: u32, cidr: Cidr, nodad: bool) -> io::Result<()> {
        let mut request = self.handle.address().add(index, cidr.addr, cidr.prefix);
        if nodad {
            let message = request.message_mut();
            message.header.flags |= AddressHeaderFlags::Nodad;
            // IPv6 takes the 32-bit IFA_FLAGS attribute over the 8-bit header field when both
            // are present, so set it too.
            message.attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        match request.execute().await.map_err(to_io) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            other => other,
        }
    }

    /// Removes `ip` from interface `index`, whatever its prefix length. Removing an absent
    /// address succeeds.
    pub async fn remove_address(&self, index: u32, ip: IpAddr) -> io::Result<()> {
        for message in self.assignments(ip).await? {
            if message.header.index != index {
                continue;
            }
            match self.handle.address().del(message).execute().await.map_err(to_io) {
                // Gone between the dump and the delete: that is what we wanted.
                Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => {}
                other => other?,
            }
        }
        Ok(())
    }
}
