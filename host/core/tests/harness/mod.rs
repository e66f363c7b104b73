//! A tiny in-order network of cores for scenario tests: every message
//! reaches every other node at once, every batch lands on that node's disk.

#![allow(dead_code)]

use std::collections::VecDeque;

use wallance_core::msg::ServiceOffer;
use wallance_core::*;

#[derive(Debug)]
pub struct Node {
    pub core: Core,
    pub key: Keypair,
    pub disk: Snapshot,
    pub events: Vec<Event>,
    /// Contract runs asked of this node (`Output::Run`), in order.
    pub runs: Vec<msg::Certificate>,
    pub config: CoreConfig,
}

#[derive(Debug)]
pub struct Net {
    pub nodes: Vec<Node>,
    pub queue: VecDeque<(usize, Message)>,
    pub now: u64,
    /// Nodes that receive nothing (down or cut off).
    pub isolated: Vec<bool>,
    pub sent: Vec<Message>,
    /// What owed contracts return: `Some(ok)`, or `None` for a provider
    /// that never answers.
    pub contract_ok: Option<bool>,
}

pub fn keys(n: usize) -> Vec<Keypair> {
    (0..n).map(|i| Keypair::from_seed([i as u8 + 1; 32])).collect()
}

pub fn params() -> Params {
    Params {
        initial_units: 10 * UNITS_PER_COIN,
        ..Params::default()
    }
}

impl Net {
    pub fn new(n: usize) -> Self {
        Self::with(n, params(), |_| None)
    }

    pub fn with(n: usize, params: Params, tracked: impl Fn(usize) -> Option<std::collections::HashSet<u32>>) -> Self {
        let keys = keys(n);
        let membership = Membership::new(keys.iter().map(|k| k.id()).collect()).unwrap();
        let nodes = keys
            .into_iter()
            .enumerate()
            .map(|(i, key)| {
                let config = CoreConfig {
                    params: params.clone(),
                    membership: membership.clone(),
                    tracked: tracked(i),
                };
                Node {
                    core: Core::new(config.clone(), key.clone(), Snapshot::default(), 0),
                    key,
                    disk: Snapshot::default(),
                    events: vec![],
                    runs: vec![],
                    config,
                }
            })
            .collect();
        let mut net = Self {
            nodes,
            queue: VecDeque::new(),
            now: 1_000,
            isolated: vec![false; n],
            sent: vec![],
            contract_ok: Some(true),
        };
        net.flush_all();
        net
    }

    pub fn id(&self, i: usize) -> MemberId {
        self.nodes[i].key.id()
    }

    /// Node 0 offers espresso at 2 coins.
    pub fn offer_espresso(&mut self) {
        self.offer(0, "espresso", 2 * UNITS_PER_COIN, [1; 32]);
    }

    /// Node `i` offers one service, and everyone hears of it.
    pub fn offer(&mut self, i: usize, name: &str, price: u64, contract_hash: [u8; 32]) {
        let offers = vec![ServiceOffer {
            name: name.into(),
            price,
            contract_hash,
        }];
        self.nodes[i].core.set_services(self.now, offers);
        self.flush(i);
        self.run();
    }

    pub fn flush_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.flush(i);
        }
    }

    /// Carries out node `i`'s outputs; runs owed contracts at once.
    pub fn flush(&mut self, i: usize) {
        while let Some(out) = self.nodes[i].core.poll_output() {
            match out {
                Output::Persist(b) => self.nodes[i].disk.apply(&b),
                Output::Send(m) => {
                    self.sent.push(m.clone());
                    self.queue.push_back((i, m));
                }
                Output::Run(cert) => {
                    let idx = self.nodes[i]
                        .config
                        .membership
                        .index_of(&cert.request.requester)
                        .unwrap();
                    let v = cert.new_version();
                    self.nodes[i].runs.push((*cert).clone());
                    if let Some(ok) = self.contract_ok {
                        let body = if ok { "one espresso" } else { "no free spot" };
                        self.nodes[i].core.contract_done(self.now, idx, v, ok, body, Vec::new());
                    }
                }
                Output::Event(e) => self.nodes[i].events.push(e),
            }
        }
    }

    /// Delivers until nothing is left.
    pub fn run(&mut self) {
        let mut steps = 0;
        while let Some((from, m)) = self.queue.pop_front() {
            steps += 1;
            assert!(steps < 1_000_000, "message storm");
            for to in 0..self.nodes.len() {
                if to == from || self.isolated[to] {
                    continue;
                }
                let _ = self.nodes[to].core.handle_message(self.now, m.clone());
                self.flush(to);
            }
        }
    }

    /// [`Self::run`], but in rounds, as a node drains what arrived together:
    /// each node gets the round's messages batched (`Core::preverify`), then
    /// one by one. `tamper` may change what one node gets in one round.
    pub fn run_batched(&mut self, mut tamper: impl FnMut(usize, &mut Vec<Message>)) {
        let mut rounds = 0;
        while !self.queue.is_empty() {
            rounds += 1;
            assert!(rounds < 10_000, "message storm");
            let round: Vec<(usize, Message)> = self.queue.drain(..).collect();
            for to in 0..self.nodes.len() {
                if self.isolated[to] {
                    continue;
                }
                let mut msgs: Vec<Message> = round.iter().filter(|(f, _)| *f != to).map(|(_, m)| m.clone()).collect();
                tamper(to, &mut msgs);
                self.nodes[to].core.preverify(&msgs);
                for m in msgs {
                    let _ = self.nodes[to].core.handle_message(self.now, m);
                }
                self.flush(to);
            }
        }
    }

    pub fn tick(&mut self, ms: u64) {
        self.now += ms;
        for i in 0..self.nodes.len() {
            if !self.isolated[i] {
                self.nodes[i].core.handle_timeout(self.now);
                self.flush(i);
            }
        }
        self.run();
    }

    pub fn share(&mut self, i: usize, n: usize) {
        for _ in 0..n {
            self.nodes[i].core.publish_share(self.now, "temperature", 21.5);
        }
        self.flush(i);
        self.run();
    }

    pub fn buy(&mut self, i: usize) -> Result<msg::Request, BuyError> {
        let r = self.nodes[i]
            .core
            .buy(self.now, "espresso", None, 2 * UNITS_PER_COIN, vec![]);
        self.flush(i);
        self.run();
        r
    }

    pub fn wallet(&self, at: usize, of: usize) -> Wallet {
        self.nodes[at].core.wallet(&self.id(of)).unwrap().clone()
    }

    pub fn commits(&self, at: usize) -> usize {
        self.nodes[at]
            .events
            .iter()
            .filter(|e| matches!(e, Event::Committed { .. }))
            .count()
    }

    /// Restarts node `i` from its disk.
    pub fn restart(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.core = Core::new(n.config.clone(), n.key.clone(), n.disk.clone(), self.now);
        self.flush(i);
    }
}
