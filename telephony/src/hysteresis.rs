//! keepalived's `rise`/`fall`, the one meaning pbxha gives those keys everywhere: ping
//! targets (`[ping]`), SIP probes (`[[probe]]`) and checks (`[[check]]`).
//!
//! A target starts [`Health::Unknown`]. `rise` good samples in a row make it up, `fall` bad
//! ones in a row make it down — from unknown as from the other state, so the first verdict
//! also waits for its run: a single sample never decides. A sample of the other kind starts
//! the count again. Pure.

/// What the hysteresis says about a target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Not yet `rise` good or `fall` bad samples in a row since it started.
    Unknown,
    Up,
    Down,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Up => "up",
            Health::Down => "down",
        }
    }

    /// `Some(true)` up, `Some(false)` down, `None` not yet known.
    pub fn up(self) -> Option<bool> {
        match self {
            Health::Unknown => None,
            Health::Up => Some(true),
            Health::Down => Some(false),
        }
    }
}

/// One target's `rise`/`fall` (see the module).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hysteresis {
    rise: u32,
    fall: u32,
    health: Health,
    good_run: u32,
    bad_run: u32,
}

impl Hysteresis {
    /// Starts [`Health::Unknown`]; `rise` and `fall` below 1 count as 1.
    pub fn new(rise: u32, fall: u32) -> Self {
        Hysteresis { rise: rise.max(1), fall: fall.max(1), health: Health::Unknown, good_run: 0, bad_run: 0 }
    }

    pub fn health(&self) -> Health {
        self.health
    }

    /// Failed samples in a row, up to the latest.
    pub fn bad_run(&self) -> u32 {
        self.bad_run
    }

    /// Takes one sample; returns the new health when it changed.
    pub fn observe(&mut self, healthy: bool) -> Option<Health> {
        let next = if healthy {
            self.good_run = self.good_run.saturating_add(1);
            self.bad_run = 0;
            (self.good_run >= self.rise).then_some(Health::Up)
        } else {
            self.bad_run = self.bad_run.saturating_add(1);
            self.good_run = 0;
            (self.bad_run >= self.fall).then_some(Health::Down)
        };
        match next {
            Some(h) if h != self.health => {
                self.health = h;
                Some(h)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Health::{Down, Unknown, Up};

    /// `+` a good sample, `-` a bad one: the health after each.
    #[test]
    fn rise_and_fall_table() {
        #[rustfmt::skip]
        let table: &[(u32, u32, &str, &[Health], &str)] = &[
            (2, 3, "++",       &[Unknown, Up], "rise goods make an unknown target up"),
            (2, 3, "---",      &[Unknown, Unknown, Down], "fall bads make it down: one sample never decides"),
            (2, 3, "+-+",      &[Unknown, Unknown, Unknown], "alternating samples leave it unknown"),
            (2, 3, "++--+---", &[Unknown, Up, Up, Up, Up, Up, Up, Down], "a good sample restarts the fall count"),
            (2, 3, "----+-++", &[Unknown, Unknown, Down, Down, Down, Down, Down, Up], "a bad one restarts the rise count"),
            (1, 1, "+-+",      &[Up, Down, Up], "rise = fall = 1 follows every sample"),
            (0, 0, "-+",       &[Down, Up], "0 counts as 1"),
            (5, 2, "--",       &[Unknown, Down], "from unknown the bad run needs only fall"),
        ];
        for (rise, fall, samples, after, why) in table {
            let mut h = Hysteresis::new(*rise, *fall);
            assert_eq!(h.health(), Unknown);
            let got: Vec<Health> = samples
                .chars()
                .map(|c| {
                    let before = h.health();
                    let changed = h.observe(c == '+');
                    assert_eq!(
                        changed,
                        (h.health() != before).then_some(h.health()),
                        "{why}: a change is reported once"
                    );
                    h.health()
                })
                .collect();
            assert_eq!(&got, after, "rise {rise}, fall {fall}, {samples}: {why}");
        }
    }

    #[test]
    fn the_bad_run_counts_failures_in_a_row() {
        let mut h = Hysteresis::new(2, 3);
        for ok in [false, true, false, false] {
            h.observe(ok);
        }
        assert_eq!(h.bad_run(), 2);
    }
}
