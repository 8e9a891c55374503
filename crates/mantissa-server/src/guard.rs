//! The connection guard: what keeps the server answering on a violent
//! network.
//!
//! A slow or hostile client costs a connection slot, so slots are capped
//! overall and per IP address, and every protocol bounds how long a
//! connection may take to say something useful (the header timeout in HTTP).
//! Requests are rate-limited per IP with token buckets (`governor`), and
//! when too many requests are in flight the newest is shed with a
//! "try again" answer instead of letting latency and memory run away.
//!
//! Per-address limits alone do not hold a site up: loopback alone offers an
//! attacker sixteen million addresses, and a botnet as many as it likes. So
//! every site-wide resource is also protected from what many addresses
//! together can do to it:
//!
//! - Requests whose body is still arriving hold no site-wide permit: they
//!   are counted per address ([`Guard::receive_body`]) and take their
//!   in-flight permit only once the body is whole, so a thousand trickled
//!   bodies cannot use up the permits visitors need.
//! - In-flight requests are capped per address as well as overall
//!   ([`Guard::begin_request`]), so one address cannot take the site-wide
//!   permits with HTTP/2 streams.
//! - When connection slots run short, the accept loop makes room by
//!   closing the connections that have waited longest for a request head,
//!   and shortens the header timeout ([`Guard::header_timeout_now`]): a
//!   slowloris from many addresses pushes out its own connections, not the
//!   visitors'.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

/// The limits every listener enforces. The defaults suit one small machine.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Open connections, all listeners together.
    pub max_connections: usize,
    /// Open connections from one IP address.
    pub max_connections_per_ip: usize,
    /// Time to complete a TLS handshake.
    pub handshake_timeout: Duration,
    /// Time to send a request's headers (HTTP), or a command (SMTP).
    pub header_timeout: Duration,
    /// Time to send a request's whole body, counted from the end of its
    /// head: a deadline, not a pause between bytes, so that a body trickled
    /// a byte at a time is cut all the same.
    pub body_timeout: Duration,
    /// A keep-alive connection with nothing to do is closed after this.
    pub idle_timeout: Duration,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Sustained requests per second from one IP address.
    pub requests_per_second_per_ip: u32,
    /// Requests one IP address may send in a burst.
    pub request_burst_per_ip: u32,
    /// Requests being handled at once, beyond which new ones are shed.
    /// A request whose body is still arriving does not count.
    pub max_in_flight: usize,
    /// Requests from one IP address being handled at once.
    pub max_in_flight_per_ip: usize,
    /// Requests from one IP address whose body is still arriving.
    pub max_receiving_per_ip: usize,
    /// Connections the kernel may hold for the accept loop (`listen(2)`'s
    /// backlog; the kernel caps it at `net.core.somaxconn`).
    pub listen_backlog: u32,
    /// How long a graceful shutdown waits for requests in flight.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 10_000,
            max_connections_per_ip: 64,
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_body_bytes: 2 * 1024 * 1024,
            requests_per_second_per_ip: 100,
            request_burst_per_ip: 200,
            max_in_flight: 1024,
            max_in_flight_per_ip: 32,
            max_receiving_per_ip: 8,
            // A burst of connections arriving faster than the accept loop
            // takes them waits here instead of losing its SYN (which the
            // client only sends again after a second). 4,096 is Linux's
            // default `somaxconn` since 5.4; tokio's default is 1,024.
            listen_backlog: 4096,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

impl Limits {
    /// Raises this process's limit of open files as far as the system lets
    /// it (to the hard limit, as Go's runtime and nginx's
    /// `worker_rlimit_nofile` do), and lowers [`Limits::max_connections`]
    /// to what that limit leaves room for: a quarter of the files (at least
    /// 256) stay for stores, logs and mail. Returns the limit of open files.
    ///
    /// Without this, a server under the usual soft limit of 1,024 files runs
    /// out of them long before its connection cap, and then it can accept
    /// nobody — and the guard, which makes room only when its own cap is
    /// reached, never sees why.
    pub fn fit_to_open_files(&mut self) -> u64 {
        let files = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
        let room = files.saturating_sub((files / 4).max(256)).max(16);
        let room = usize::try_from(room).unwrap_or(usize::MAX);
        if self.max_connections > room {
            tracing::info!(
                files,
                max_connections = room,
                "the limit of open files leaves room for fewer connections than configured"
            );
            self.max_connections = room;
        }
        files
    }
}

/// Why the guard said no.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// This address sends too fast; it may try again after this long.
    RateLimited(Duration),
    /// The server is busy; try again after this long.
    Overloaded(Duration),
    /// Too many connections, from this address or overall.
    TooManyConnections,
}

impl Refusal {
    /// Seconds a client should wait, for a `Retry-After` header.
    pub fn retry_after_secs(self) -> u64 {
        match self {
            Refusal::RateLimited(d) | Refusal::Overloaded(d) => d.as_secs().max(1),
            Refusal::TooManyConnections => 1,
        }
    }
}

type KeyedLimiter = RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, DefaultClock>;

struct Inner {
    limits: Limits,
    open: AtomicUsize,
    per_ip: DashMap<IpAddr, usize>,
    in_flight: AtomicUsize,
    /// Requests in flight and bodies arriving, per address.
    requests_per_ip: DashMap<IpAddr, PerIp>,
    limiter: KeyedLimiter,
    /// Addresses of reverse proxies, exempt from the per-address cap on
    /// connections (see [`Guard::trust_proxies`]).
    proxies: std::sync::RwLock<Option<ProxyTest>>,
}

/// Tells whether an address is one of the site's trusted reverse proxies.
type ProxyTest = Arc<dyn Fn(IpAddr) -> bool + Send + Sync>;

/// What one address has going on, beyond its connections.
#[derive(Debug, Default, Clone, Copy)]
struct PerIp {
    in_flight: usize,
    receiving: usize,
}

/// The guard shared by every listener and protocol. Cheap to clone.
#[derive(Clone)]
pub struct Guard {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("open", &self.open_connections())
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

impl Guard {
    /// A guard enforcing `limits`.
    pub fn new(limits: Limits) -> Guard {
        let rate = NonZeroU32::new(limits.requests_per_second_per_ip.max(1)).expect("nonzero");
        let burst = NonZeroU32::new(limits.request_burst_per_ip.max(1)).expect("nonzero");
        Guard {
            inner: Arc::new(Inner {
                limiter: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
                limits,
                open: AtomicUsize::new(0),
                per_ip: DashMap::new(),
                in_flight: AtomicUsize::new(0),
                requests_per_ip: DashMap::new(),
                proxies: std::sync::RwLock::new(None),
            }),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.inner.open.load(Ordering::Relaxed)
    }

    /// Requests being handled now.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::Relaxed)
    }

    /// Takes a connection slot for `ip`, or refuses. The slot is given back
    /// when the returned guard is dropped.
    pub fn admit(&self, ip: IpAddr) -> Result<SlotGuard, Refusal> {
        self.admit_beyond_cap(ip, 0)
    }

    /// Takes a connection slot for `ip`, allowing `extra` connections
    /// beyond the overall cap: as many as are closing to make room and
    /// still hold their slots (the listener's business).
    pub(crate) fn admit_beyond_cap(&self, ip: IpAddr, extra: usize) -> Result<SlotGuard, Refusal> {
        let l = &self.inner.limits;
        if self.inner.open.fetch_add(1, Ordering::AcqRel) >= l.max_connections + extra {
            self.inner.open.fetch_sub(1, Ordering::AcqRel);
            metrics::counter!("mantissa_connections_refused_total", "reason" => "global")
                .increment(1);
            return Err(Refusal::TooManyConnections);
        }
        let mut entry = self.inner.per_ip.entry(ip).or_insert(0);
        if *entry >= l.max_connections_per_ip && !self.is_proxy(ip) {
            drop(entry);
            self.inner.open.fetch_sub(1, Ordering::AcqRel);
            metrics::counter!("mantissa_connections_refused_total", "reason" => "per_ip")
                .increment(1);
            return Err(Refusal::TooManyConnections);
        }
        *entry += 1;
        drop(entry);
        metrics::gauge!("mantissa_connections_open").increment(1.0);
        Ok(SlotGuard {
            guard: self.clone(),
            ip,
        })
    }

    /// Counts one request from `ip` against its rate: refused if the
    /// address sends too fast. The first thing asked of every request.
    pub fn check_rate(&self, ip: IpAddr) -> Result<(), Refusal> {
        if let Err(not_until) = self.inner.limiter.check_key(&ip) {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            metrics::counter!("mantissa_requests_refused_total", "reason" => "rate").increment(1);
            return Err(Refusal::RateLimited(wait));
        }
        Ok(())
    }

    /// Asks to receive a request's body from `ip`: refused if the address
    /// already has as many bodies arriving as it may. Hold the returned
    /// slot while the body arrives (within [`Limits::body_timeout`]); it
    /// takes nothing site-wide.
    pub fn receive_body(&self, ip: IpAddr) -> Result<Receiving<'_>, Refusal> {
        let mut entry = self.inner.requests_per_ip.entry(ip).or_default();
        if entry.receiving >= self.inner.limits.max_receiving_per_ip {
            drop(entry);
            metrics::counter!("mantissa_requests_refused_total", "reason" => "bodies_per_ip")
                .increment(1);
            return Err(Refusal::RateLimited(Duration::from_secs(1)));
        }
        entry.receiving += 1;
        Ok(Receiving { guard: self, ip })
    }

    /// Asks to start handling one request from `ip` (its head and body
    /// received): refused if the address, or the server as a whole, has as
    /// many requests in flight as it may. Hold the permit while the request
    /// is handled.
    pub fn begin_request(&self, ip: IpAddr) -> Result<Permit<'_>, Refusal> {
        let n = self.inner.in_flight.fetch_add(1, Ordering::AcqRel);
        if n >= self.inner.limits.max_in_flight {
            self.inner.in_flight.fetch_sub(1, Ordering::AcqRel);
            metrics::counter!("mantissa_requests_refused_total", "reason" => "load").increment(1);
            return Err(Refusal::Overloaded(Duration::from_secs(1)));
        }
        let mut entry = self.inner.requests_per_ip.entry(ip).or_default();
        if entry.in_flight >= self.inner.limits.max_in_flight_per_ip {
            drop(entry);
            self.inner.in_flight.fetch_sub(1, Ordering::AcqRel);
            metrics::counter!("mantissa_requests_refused_total", "reason" => "load_per_ip")
                .increment(1);
            return Err(Refusal::RateLimited(Duration::from_secs(1)));
        }
        entry.in_flight += 1;
        Ok(Permit { guard: self, ip })
    }

    /// The header timeout that applies now: the configured one while
    /// connection slots are plentiful, shorter as they run out (down to a
    /// tenth of it, but not under a second, when they are all taken), as
    /// Apache's mod_reqtimeout asks a minimum rate of a slow head. A
    /// visitor's browser sends its head at once; only clients that dawdle
    /// feel it.
    pub fn header_timeout_now(&self) -> Duration {
        let l = &self.inner.limits;
        let full = l.header_timeout;
        let half = l.max_connections / 2;
        let open = self.open_connections();
        if open <= half || l.max_connections == 0 {
            return full;
        }
        let floor = (full / 10).max(Duration::from_secs(1)).min(full);
        // From the full timeout at half the slots taken to the floor at all.
        let pressure = ((open - half) as f64 / (l.max_connections - half).max(1) as f64).min(1.0);
        full.mul_f64(1.0 - pressure) + floor.mul_f64(pressure)
    }

    /// Forgets rate-limit state of addresses that have been quiet; call now
    /// and then so the table does not grow without bound.
    pub fn forget_quiet_addresses(&self) {
        self.inner.limiter.retain_recent();
        self.inner.per_ip.retain(|_, n| *n > 0);
        self.inner
            .requests_per_ip
            .retain(|_, n| n.in_flight > 0 || n.receiving > 0);
    }

    /// Whether `ip` has as many connections as it may.
    pub(crate) fn ip_is_full(&self, ip: IpAddr) -> bool {
        self.inner
            .per_ip
            .get(&ip)
            .is_some_and(|n| *n >= self.inner.limits.max_connections_per_ip)
            && !self.is_proxy(ip)
    }

    /// Says which addresses are the site's trusted reverse proxies: their
    /// connections carry many clients' requests, so the per-address cap on
    /// connections does not apply to them. (The protocol counts requests
    /// by the client the proxy names, so per-address request limits still
    /// hold each client behind it.)
    pub fn trust_proxies(&self, is_proxy: impl Fn(IpAddr) -> bool + Send + Sync + 'static) {
        *self
            .inner
            .proxies
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(is_proxy));
    }

    fn is_proxy(&self, ip: IpAddr) -> bool {
        self.inner
            .proxies
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|test| test(ip))
    }

    /// Whether a new connection would be refused for want of slots overall
    /// (rather than for its address): the accept loop then makes room.
    pub fn is_full(&self) -> bool {
        self.open_connections() >= self.inner.limits.max_connections
    }
}

/// A connection slot; given back on drop.
#[derive(Debug)]
pub struct SlotGuard {
    guard: Guard,
    ip: IpAddr,
}

impl SlotGuard {
    /// The guard this slot belongs to.
    pub fn guard(&self) -> &Guard {
        &self.guard
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        if let Some(mut n) = self.guard.inner.per_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
        }
        self.guard.inner.open.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!("mantissa_connections_open").decrement(1.0);
    }
}

/// A request being handled; the load counts drop when it is dropped.
///
/// It borrows the guard rather than holding a clone of it: a clone is a
/// write to the guard's reference count, one cache line every request on
/// every thread writes to (`bench/README.md`, "Web").
#[derive(Debug)]
pub struct Permit<'a> {
    guard: &'a Guard,
    ip: IpAddr,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.guard.inner.in_flight.fetch_sub(1, Ordering::AcqRel);
        if let Some(mut n) = self.guard.inner.requests_per_ip.get_mut(&self.ip) {
            n.in_flight = n.in_flight.saturating_sub(1);
        }
    }
}

/// A request body arriving from one address; given back on drop.
#[derive(Debug)]
pub struct Receiving<'a> {
    guard: &'a Guard,
    ip: IpAddr,
}

impl Drop for Receiving<'_> {
    fn drop(&mut self) {
        if let Some(mut n) = self.guard.inner.requests_per_ip.get_mut(&self.ip) {
            n.receiving = n.receiving.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_capped_per_ip_and_given_back() {
        let g = Guard::new(Limits {
            max_connections_per_ip: 2,
            ..Limits::default()
        });
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let s1 = g.admit(a).unwrap();
        let _s2 = g.admit(a).unwrap();
        assert_eq!(g.admit(a).unwrap_err(), Refusal::TooManyConnections);
        let _other = g.admit(b).expect("another address is not affected");
        drop(s1);
        g.admit(a).expect("a slot came back");
    }

    #[test]
    fn requests_are_rate_limited_per_ip_and_shed_under_load() {
        let g = Guard::new(Limits {
            requests_per_second_per_ip: 1,
            request_burst_per_ip: 3,
            max_in_flight: 5,
            max_in_flight_per_ip: 2,
            ..Limits::default()
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..3 {
            g.check_rate(a).unwrap();
        }
        assert!(matches!(g.check_rate(a), Err(Refusal::RateLimited(_))));

        // Two in flight from one address, then it waits its turn; others
        // are not affected until the site as a whole is full.
        let mine: Vec<_> = (0..2).map(|_| g.begin_request(a).unwrap()).collect();
        assert!(matches!(g.begin_request(a), Err(Refusal::RateLimited(_))));
        let others: Vec<_> = (2..5)
            .map(|i| g.begin_request(IpAddr::from([10, 0, 0, i])).unwrap())
            .collect();
        assert_eq!(g.in_flight(), 5);
        assert!(matches!(
            g.begin_request(IpAddr::from([10, 0, 0, 9])),
            Err(Refusal::Overloaded(_))
        ));
        drop(mine);
        drop(others);
        assert_eq!(g.in_flight(), 0);
        let again: Vec<_> = (0..2).map(|_| g.begin_request(a).unwrap()).collect();
        assert_eq!(again.len(), 2, "the address's permits came back");
    }

    #[test]
    fn bodies_arriving_are_capped_per_ip_and_take_no_site_wide_permit() {
        let g = Guard::new(Limits {
            max_in_flight: 1,
            max_receiving_per_ip: 2,
            ..Limits::default()
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let slow: Vec<_> = (0..2).map(|_| g.receive_body(a).unwrap()).collect();
        assert!(matches!(g.receive_body(a), Err(Refusal::RateLimited(_))));
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let _visitor = g.begin_request(b).expect("the site's permit is free");
        drop(slow);
        g.receive_body(a).expect("its slots came back");
    }

    #[test]
    fn the_header_timeout_shortens_as_connection_slots_run_out() {
        let g = Guard::new(Limits {
            max_connections: 100,
            max_connections_per_ip: 100,
            header_timeout: Duration::from_secs(20),
            ..Limits::default()
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let mut slots = Vec::new();
        for _ in 0..50 {
            slots.push(g.admit(a).unwrap());
        }
        assert_eq!(g.header_timeout_now(), Duration::from_secs(20));
        for _ in 0..25 {
            slots.push(g.admit(a).unwrap());
        }
        let midway = g.header_timeout_now();
        assert!(midway < Duration::from_secs(12) && midway > Duration::from_secs(10));
        for _ in 0..25 {
            slots.push(g.admit(a).unwrap());
        }
        assert!(g.is_full());
        assert_eq!(g.header_timeout_now(), Duration::from_secs(2));
        slots.clear();
        assert_eq!(g.header_timeout_now(), Duration::from_secs(20));
    }
}
