//! The connection guard: what keeps the server answering on a violent
//! network.
//!
//! A slow or hostile client costs a connection slot, so slots are capped
//! overall and per IP address, and every protocol bounds how long a
//! connection may take to say something useful (the header timeout in HTTP).
//! Requests are rate-limited per IP with token buckets (`governor`), and
//! when too many requests are in flight the newest is shed with a
//! "try again" answer instead of letting latency and memory run away.

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
    /// Time to send a request's body.
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
    pub max_in_flight: usize,
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
            shutdown_grace: Duration::from_secs(10),
        }
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
    limiter: KeyedLimiter,
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
        let l = &self.inner.limits;
        if self.inner.open.fetch_add(1, Ordering::AcqRel) >= l.max_connections {
            self.inner.open.fetch_sub(1, Ordering::AcqRel);
            metrics::counter!("mantissa_connections_refused_total", "reason" => "global")
                .increment(1);
            return Err(Refusal::TooManyConnections);
        }
        let mut entry = self.inner.per_ip.entry(ip).or_insert(0);
        if *entry >= l.max_connections_per_ip {
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

    /// Asks to start one request from `ip`: refused if the address is over
    /// its rate or the server is over its load. Hold the permit while the
    /// request is handled.
    pub fn begin_request(&self, ip: IpAddr) -> Result<Permit<'_>, Refusal> {
        if let Err(not_until) = self.inner.limiter.check_key(&ip) {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            metrics::counter!("mantissa_requests_refused_total", "reason" => "rate").increment(1);
            return Err(Refusal::RateLimited(wait));
        }
        let n = self.inner.in_flight.fetch_add(1, Ordering::AcqRel);
        if n >= self.inner.limits.max_in_flight {
            self.inner.in_flight.fetch_sub(1, Ordering::AcqRel);
            metrics::counter!("mantissa_requests_refused_total", "reason" => "load").increment(1);
            return Err(Refusal::Overloaded(Duration::from_secs(1)));
        }
        Ok(Permit { guard: self })
    }

    /// Forgets rate-limit state of addresses that have been quiet; call now
    /// and then so the table does not grow without bound.
    pub fn forget_quiet_addresses(&self) {
        self.inner.limiter.retain_recent();
        self.inner.per_ip.retain(|_, n| *n > 0);
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

/// A request being handled; the load count drops when it is dropped.
///
/// It borrows the guard rather than holding a clone of it: a clone is a
/// write to the guard's reference count, one cache line every request on
/// every thread writes to (`bench/README.md`, "Web").
#[derive(Debug)]
pub struct Permit<'a> {
    guard: &'a Guard,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.guard.inner.in_flight.fetch_sub(1, Ordering::AcqRel);
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
            ..Limits::default()
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let permits: Vec<_> = (0..3).map(|_| g.begin_request(a).unwrap()).collect();
        assert!(matches!(g.begin_request(a), Err(Refusal::RateLimited(_))));
        let others: Vec<_> = (2..4)
            .map(|i| g.begin_request(IpAddr::from([10, 0, 0, i])).unwrap())
            .collect();
        assert_eq!(g.in_flight(), 5);
        assert!(matches!(
            g.begin_request(IpAddr::from([10, 0, 0, 9])),
            Err(Refusal::Overloaded(_))
        ));
        drop(permits);
        drop(others);
        assert_eq!(g.in_flight(), 0);
    }
}
