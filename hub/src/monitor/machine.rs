//! The online / offline / escalated state machine of one edge. Pure: a state, a check result
//! and the time in; the new state and the events to alert on out. The hub stores the state in
//! its database, so a restart neither re-alerts nor misses a recovery.
//!
//! Damping: an edge goes offline only after `offline_misses` consecutive failed checks
//! (ceil(offline_after / interval), never fewer than two) spanning most of `offline_after`,
//! and comes back only after `recover_after` consecutive healthy checks, so a flapping edge
//! alerts once and recovers once it is stable. Counting misses rather than comparing record
//! times keeps "offline after 60 s" at the second failed 30 s check even when checks are
//! recorded a little early or late.

use std::time::Duration;

use chrono::{DateTime, Utc};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Never answered healthy since it enrolled (or since the hub first saw it).
    Unknown,
    Online,
    Offline,
    Escalated,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Unknown => "unknown",
            State::Online => "online",
            State::Offline => "offline",
            State::Escalated => "escalated",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        Some(match s {
            "unknown" => State::Unknown,
            "online" => State::Online,
            "offline" => State::Offline,
            "escalated" => State::Escalated,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeState {
    pub state: State,
    /// When the edge last answered healthy; before any, when the hub started watching it.
    pub last_ok_at: Option<DateTime<Utc>>,
    pub watched_since: DateTime<Utc>,
    pub consecutive_ok: u32,
    pub consecutive_failed: u32,
    pub offline_since: Option<DateTime<Utc>>,
    pub escalations: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub offline_after: Duration,
    /// The check interval: with `offline_after` it gives how many misses make an outage.
    pub interval: Duration,
    pub escalate_after: Duration,
    pub recover_after: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            offline_after: Duration::from_secs(60),
            interval: Duration::from_secs(30),
            escalate_after: Duration::from_secs(3600),
            recover_after: 2,
        }
    }
}

impl Policy {
    /// Consecutive failed checks that make an edge offline: ceil(offline_after / interval),
    /// at least two (one lost packet is not an outage).
    pub fn offline_misses(&self) -> u32 {
        let i = self.interval.as_millis().max(1);
        (self.offline_after.as_millis().div_ceil(i) as u32).max(2)
    }

    /// The misses must also span most of `offline_after` (half an interval of slack for
    /// check timing), so an edge first watched a moment ago is not declared offline early.
    fn outage_span(&self) -> Duration {
        self.offline_after.saturating_sub(self.interval / 2)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Went offline; `since` is the last time it was known healthy.
    Offline {
        since: DateTime<Utc>,
    },
    Escalated {
        since: DateTime<Utc>,
        level: u32,
    },
    Recovered {
        since: DateTime<Utc>,
        outage: Duration,
    },
}

fn elapsed(from: DateTime<Utc>, to: DateTime<Utc>) -> Duration {
    (to - from).to_std().unwrap_or_default()
}

pub fn step(
    s: &EdgeState,
    healthy: bool,
    now: DateTime<Utc>,
    p: &Policy,
) -> (EdgeState, Option<Event>) {
    let mut n = s.clone();
    if healthy {
        n.last_ok_at = Some(now);
        n.consecutive_ok = s.consecutive_ok.saturating_add(1);
        n.consecutive_failed = 0;
        return match s.state {
            State::Unknown | State::Online => {
                n.state = State::Online;
                (n, None)
            }
            State::Offline | State::Escalated if n.consecutive_ok >= p.recover_after => {
                let since = s.offline_since.unwrap_or(now);
                n.state = State::Online;
                n.offline_since = None;
                n.escalations = 0;
                (
                    n,
                    Some(Event::Recovered {
                        since,
                        outage: elapsed(since, now),
                    }),
                )
            }
            State::Offline | State::Escalated => (n, None),
        };
    }
    n.consecutive_ok = 0;
    n.consecutive_failed = s.consecutive_failed.saturating_add(1);
    match s.state {
        State::Unknown | State::Online => {
            let since = s.last_ok_at.unwrap_or(s.watched_since);
            if n.consecutive_failed >= p.offline_misses() && elapsed(since, now) >= p.outage_span()
            {
                n.state = State::Offline;
                n.offline_since = Some(since);
                (n, Some(Event::Offline { since }))
            } else {
                (n, None)
            }
        }
        State::Offline => {
            let since = s.offline_since.unwrap_or(now);
            if elapsed(since, now) >= p.escalate_after {
                n.state = State::Escalated;
                n.escalations = 1;
                (n, Some(Event::Escalated { since, level: 1 }))
            } else {
                (n, None)
            }
        }
        State::Escalated => (n, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    fn fresh() -> EdgeState {
        EdgeState {
            state: State::Unknown,
            last_ok_at: None,
            watched_since: t(0),
            consecutive_ok: 0,
            consecutive_failed: 0,
            offline_since: None,
            escalations: 0,
        }
    }

    /// Run checks every 30 s: `true` healthy, `false` not; collect events with their times.
    fn run(pattern: &[bool]) -> (EdgeState, Vec<(i64, Event)>) {
        let p = Policy::default();
        let mut s = fresh();
        let mut events = vec![];
        for (i, h) in pattern.iter().enumerate() {
            let now = t(i as i64 * 30);
            let (ns, e) = step(&s, *h, now, &p);
            if let Some(e) = e {
                events.push((i as i64 * 30, e));
            }
            s = ns;
        }
        (s, events)
    }

    #[test]
    fn offline_after_sixty_seconds_without_a_healthy_answer() {
        let (s, ev) = run(&[true, false]);
        assert!(
            ev.is_empty(),
            "30 s without a healthy answer is not offline yet: {ev:?}"
        );
        assert_eq!(s.state, State::Online);
        let (s, ev) = run(&[true, false, false]);
        assert_eq!(ev, vec![(60, Event::Offline { since: t(0) })]);
        assert_eq!(s.state, State::Offline);
    }

    #[test]
    fn escalates_after_an_hour_once() {
        let mut pattern = vec![true];
        pattern.extend(std::iter::repeat_n(false, 200));
        let (s, ev) = run(&pattern);
        assert_eq!(ev.len(), 2, "{ev:?}");
        assert_eq!(
            ev[1],
            (
                3600,
                Event::Escalated {
                    since: t(0),
                    level: 1
                }
            )
        );
        assert_eq!(s.state, State::Escalated);
    }

    #[test]
    fn recovery_reports_the_outage_after_two_healthy_checks() {
        let (s, ev) = run(&[true, false, false, false, false, true, true]);
        assert_eq!(
            ev.last().unwrap(),
            &(
                180,
                Event::Recovered {
                    since: t(0),
                    outage: Duration::from_secs(180)
                }
            )
        );
        assert_eq!(s.state, State::Online);
        assert_eq!(s.offline_since, None);
    }

    #[test]
    fn flapping_alerts_once_and_recovers_only_when_stable() {
        let (_, ev) = run(&[
            true, false, false, false, true, false, true, false, true, false, true, true,
        ]);
        let offline = ev
            .iter()
            .filter(|(_, e)| matches!(e, Event::Offline { .. }))
            .count();
        let recovered = ev
            .iter()
            .filter(|(_, e)| matches!(e, Event::Recovered { .. }))
            .count();
        assert_eq!((offline, recovered), (1, 1), "{ev:?}");
        // An edge answering every other check while online never goes offline.
        let (s, ev) = run(&[true, false, true, false, true, false, true]);
        assert!(ev.is_empty() && s.state == State::Online, "{ev:?}");
    }

    #[test]
    fn a_check_recorded_early_still_counts_as_the_second_miss() {
        let p = Policy::default();
        let mut s = fresh();
        (s, _) = step(&s, true, t(0), &p);
        (s, _) = step(&s, false, t(29), &p);
        let (s, ev) = step(&s, false, t(57), &p);
        assert_eq!(ev, Some(Event::Offline { since: t(0) }));
        assert_eq!(s.consecutive_failed, 2);
        assert_eq!(Policy::default().offline_misses(), 2);
        let slow = Policy {
            interval: Duration::from_secs(10),
            ..Policy::default()
        };
        assert_eq!(slow.offline_misses(), 6);
    }

    #[test]
    fn an_edge_never_seen_healthy_goes_offline_from_when_it_was_first_watched() {
        let (_, ev) = run(&[false, false, false]);
        assert_eq!(ev, vec![(60, Event::Offline { since: t(0) })]);
    }
}
