//! A scenario's two runs (PostgreSQL, then the proxy) and the comparison of their
//! transcripts.

use super::common::{error_field as field, proxy_config, PgServer, ProxyProcess};
use super::wire::*;
use super::MD5_USERS;

/// How far to read after sending.
#[derive(Clone, Copy)]
pub enum Wait {
    /// This many ReadyForQuery.
    Ready(usize),
    /// Up to and including the first message of this type.
    Tag(u8),
}

pub struct Step {
    label: String,
    got: String,
    /// The answer this file expects ("" = compare with PostgreSQL only).
    want: String,
    /// Compared with `want` on each side, not across sides (a documented difference).
    own: bool,
}

/// One run of a scenario: against PostgreSQL, or through the proxy.
pub struct Side {
    pub proxy: bool,
    pub port: u16,
    pub conns: Vec<Conn>,
    pub steps: Vec<Step>,
    pub problems: Vec<String>,
    /// Error messages are part of the transcript (set by the scenario).
    pub messages: bool,
}

impl Side {
    /// A new client session; returns its index.
    pub fn client(&mut self) -> usize {
        let conn = if self.proxy {
            Conn::open(self.port, "app", "apppw", "launch")
        } else {
            Conn::open(self.port, "postgres", "", "postgres")
        };
        self.conns.push(conn);
        self.conns.len() - 1
    }

    /// Sends without reading.
    pub fn send(&mut self, c: usize, bytes: &[u8]) {
        self.conns[c].send(bytes);
    }

    /// Reads the answer and records it as a step.
    pub fn recv(&mut self, c: usize, label: &str, wait: Wait, want: &str) -> String {
        let conn = &mut self.conns[c];
        let mut out: Vec<String> = Vec::new();
        let (mut left, stop) = match wait {
            Wait::Ready(n) => (n, None),
            Wait::Tag(t) => (usize::MAX, Some(t)),
        };
        while left > 0 {
            match conn.recv() {
                Err(e) => {
                    out.push(format!("<{e}>"));
                    break;
                }
                Ok((tag, body)) => {
                    out.extend(summary(tag, &body, self.messages));
                    left -= usize::from(tag == b'Z');
                    if Some(tag) == stop {
                        break;
                    }
                }
            }
        }
        let got = out.join(" ");
        self.steps.push(Step {
            label: label.to_owned(),
            got: got.clone(),
            want: want.to_owned(),
            own: false,
        });
        got
    }

    /// Sends `bytes` and reads up to the ReadyForQuery of its last Sync/Query.
    pub fn run(&mut self, c: usize, label: &str, bytes: &[u8], want: &str) -> String {
        self.send(c, bytes);
        self.recv(c, label, Wait::Ready(readies(bytes)), want)
    }

    /// Sends `bytes` and reads up to the first message of type `tag`.
    pub fn run_until(
        &mut self,
        c: usize,
        label: &str,
        bytes: &[u8],
        tag: u8,
        want: &str,
    ) -> String {
        self.send(c, bytes);
        self.recv(c, label, Wait::Tag(tag), want)
    }

    /// A step where the proxy deliberately differs from PostgreSQL: each side is checked
    /// against its own expected answer.
    pub fn run_each(&mut self, c: usize, label: &str, bytes: &[u8], postgres: &str, proxy: &str) {
        let want = if self.proxy { proxy } else { postgres };
        self.run(c, label, bytes, want);
        if let Some(step) = self.steps.last_mut() {
            step.own = true;
        }
    }

    /// First column of the rows of a simple query; not part of the transcript.
    pub fn rows(&mut self, c: usize, sql: &str) -> Vec<String> {
        let conn = &mut self.conns[c];
        conn.send(&query(sql));
        let mut rows = Vec::new();
        loop {
            match conn.recv() {
                Ok((b'Z', _)) => return rows,
                Ok((b'D', b)) => {
                    let len = i32::from_be_bytes(b[2..6].try_into().unwrap()) as usize;
                    rows.push(String::from_utf8_lossy(&b[6..6 + len]).into_owned());
                }
                Ok((b'E', b)) => self.problems.push(format!("{sql}: {:?}", field(&b, b'M'))),
                Ok(_) => {}
                Err(e) => {
                    self.problems.push(format!("{sql}: {e}"));
                    return rows;
                }
            }
        }
    }

    /// A simple Query; the SQL is the step's label.
    pub fn q(&mut self, c: usize, sql: &str, want: &str) -> String {
        self.run(c, sql, &query(sql), want)
    }

    /// Extended-protocol messages and a Sync.
    pub fn x(&mut self, c: usize, label: &str, parts: &[Vec<u8>], want: &str) -> String {
        self.run(c, label, &[parts.concat(), sync()].concat(), want)
    }

    /// A check of the proxy's own workings (call it under `if s.proxy`).
    pub fn require(&mut self, ok: bool, what: &str) {
        if !ok {
            self.problems.push(what.to_owned());
        }
    }
}

pub type Scenario = fn(&mut Side);

/// A PostgreSQL cluster and a proxy in transaction mode in front of it.
pub struct Env {
    pg: PgServer,
    proxy: ProxyProcess,
}

impl Env {
    pub fn start(pool: &str) -> Env {
        let pg = PgServer::start();
        let proxy = ProxyProcess::start(&proxy_config(&pg, pool), MD5_USERS);
        Env { pg, proxy }
    }

    pub fn play(&self, proxy: bool, scenario: Scenario) -> Side {
        let port = if proxy { self.proxy.port } else { self.pg.port };
        let mut side = Side {
            proxy,
            port,
            conns: Vec::new(),
            steps: Vec::new(),
            problems: Vec::new(),
            messages: false,
        };
        scenario(&mut side);
        side.conns.clear();
        side
    }

    /// Runs `scenario` against PostgreSQL, then through the proxy; a report of every
    /// difference, or Ok.
    pub fn compare(&self, name: &str, scenario: Scenario) -> Result<(), String> {
        let pg = self.play(false, scenario);
        let px = self.play(true, scenario);
        let mut report = Vec::new();
        for (i, (a, b)) in pg.steps.iter().zip(&px.steps).enumerate() {
            let head = format!("  step {} ({})", i + 1, a.label);
            if a.own {
                for (who, s) in [("PostgreSQL", a), ("launch-proxy", b)] {
                    if s.got != s.want {
                        report.push(format!(
                            "{head}: {who} answered\n      {}\n    expected\n      {}",
                            s.got, s.want
                        ));
                    }
                }
                continue;
            }
            if !a.want.is_empty() && a.got != a.want {
                report.push(format!(
                    "{head}: PostgreSQL itself answered\n      {}\n    not what the scenario expects\n      {}",
                    a.got, a.want
                ));
            }
            if a.got != b.got {
                report.push(format!(
                    "{head}:\n    PostgreSQL:   {}\n    launch-proxy: {}",
                    a.got, b.got
                ));
            }
        }
        if pg.steps.len() != px.steps.len() {
            report.push(format!(
                "  {} steps against PostgreSQL, {} through the proxy",
                pg.steps.len(),
                px.steps.len()
            ));
        }
        report.extend(pg.problems.iter().map(|p| format!("  PostgreSQL: {p}")));
        report.extend(px.problems.iter().map(|p| format!("  launch-proxy: {p}")));
        if report.is_empty() {
            Ok(())
        } else {
            Err(format!("scenario {name}:\n{}", report.join("\n")))
        }
    }

    /// Runs every scenario; panics with the differences of all that failed.
    pub fn check_all(&self, scenarios: &[(&str, Scenario)]) {
        let failed: Vec<String> = scenarios
            .iter()
            .filter_map(|(name, s)| self.compare(name, *s).err())
            .collect();
        assert!(
            failed.is_empty(),
            "{} of {} scenarios differ from PostgreSQL:\n\n{}",
            failed.len(),
            scenarios.len(),
            failed.join("\n\n")
        );
    }
}

/// Evicts `name` from the only server connection (cache of 2) by running three others.
pub fn evict(s: &mut Side, c: usize, name: &str) {
    let others: Vec<Vec<u8>> = (0..3)
        .map(|i| {
            pbe(
                &format!("{name}_x{i}"),
                &format!("SELECT '{name} {i}'"),
                &[],
            )
        })
        .collect();
    s.x(c, "three other statements", &others, "");
}
