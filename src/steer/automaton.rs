//! Token-level automata: which token sequences a hard constraint allows.
//!
//! A constraint on text (a regex, a JSON Schema, a template) is a byte automaton. Sampling works
//! on tokens, so each constraint is lifted once, before sampling, to a [`TokenAutomaton`]: starting
//! from the byte automaton's start state, the vocabulary trie ([`TokenIndex::walk`]) is walked
//! through the byte automaton from every state reached so far, giving for each (state, token) the
//! state after the token's bytes. States that cannot reach acceptance are dropped, and tokens are
//! grouped by (source state, destination state), the unit the projection's dynamic programme
//! iterates over.
//!
//! The content of a sequence is accepted when the automaton ends in an accepting state; the PAD
//! tail that follows is handled by the projection, not here.
//!
//! ```
//! use diffusion_lm::{TextTokenizer, steer::{automaton::TokenAutomaton, token_index::TokenIndex}};
//! let tok = TextTokenizer::train(["aaa bbb", "ab ba"].into_iter(), 300).unwrap();
//! let index = TokenIndex::new(&tok);
//! // Byte automaton for "one or more 'a'": state 0 = nothing yet, 1 = seen 'a's.
//! let a = TokenAutomaton::from_byte_automaton(&index, 0u8, |_, b| (b == b'a').then_some(1), |s| s == 1, 1000).unwrap();
//! assert_eq!(a.min_tokens(), Some(1));
//! assert!(a.accepts(&tok.encode("aaa").unwrap()));
//! assert!(!a.accepts(&tok.encode("ab").unwrap()));
//! ```

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

use crate::steer::token_index::TokenIndex;
use crate::{Error, Result};

/// Tokens that lead from one state to the same next state.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenGroup {
    /// The state these tokens lead to.
    pub to: u32,
    /// The tokens, sorted.
    pub tokens: Vec<u32>,
    /// Groups with the same token list share this id, so a position's best token in the list is
    /// found once however many states use it (free-text states of a JSON Schema, for example).
    pub set: u32,
}

/// A group as the lattice's passes read it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Edge {
    pub(crate) to: u32,
    pub(crate) set: u32,
}

/// A deterministic automaton over content tokens.
#[derive(Debug, Clone)]
pub struct TokenAutomaton {
    start: u32,
    accepting: Vec<bool>,
    groups: Vec<Vec<TokenGroup>>,
    /// Fewest tokens from each state to an accepting state (`u32::MAX`: never).
    distance: Vec<u32>,
    /// Number of distinct token lists among the groups.
    num_sets: usize,
    /// Per state, its groups as compact `(to, set)` records (same order as
    /// `groups`): what the lattice's passes read.
    edges: Vec<Edge>,
    edge_start: Vec<u32>,
    /// Per token, the state each state moves to on it (`u32::MAX`: none), made on first use:
    /// what the lattice reads at a committed position instead of every group.
    columns: std::sync::OnceLock<Vec<std::sync::OnceLock<Box<[u32]>>>>,
    /// How the lattice weighs the token sets, planned on first use.
    plan: std::sync::OnceLock<crate::steer::lattice::SetPlan>,
}

impl TokenAutomaton {
    /// Lifts a byte automaton to tokens. Fails when more than `max_states` states are reachable.
    ///
    /// One trie walk per reachable state; the walks of the states waiting in the queue run in
    /// parallel, a few at a time, and their results are numbered in queue order, so the states
    /// get the same numbers as a one-at-a-time breadth-first search would give them.
    pub fn from_byte_automaton<S: Copy + Eq + Hash + Send + Sync>(
        index: &TokenIndex,
        start: S,
        step: impl Fn(S, u8) -> Option<S> + Sync,
        accepting: impl Fn(S) -> bool,
        max_states: usize,
    ) -> Result<Self> {
        use rayon::prelude::*;
        let mut ids: HashMap<S, u32> = HashMap::from([(start, 0)]);
        let mut states = vec![start];
        let mut edges: Vec<Vec<(u32, u32)>> = Vec::new(); // per state: (token, dst)
        let mut queue = VecDeque::from([0u32]);
        // Enough walks at once to keep every thread busy, few enough to bound the memory of
        // their results (up to a vocabulary's worth of edges each).
        let chunk = 2 * rayon::current_num_threads();
        while !queue.is_empty() {
            let batch: Vec<u32> = queue.drain(..chunk.min(queue.len())).collect();
            let walked: Vec<Vec<(u32, S)>> = batch
                .par_iter()
                .map(|&s| {
                    let mut out = Vec::new();
                    index.walk(states[s as usize], &step, |token, dst| out.push((token, dst)));
                    out
                })
                .collect();
            for (s, found) in batch.into_iter().zip(walked) {
                let mut out = Vec::with_capacity(found.len());
                // Consecutive tokens often lead to the same state: skip the hash lookup then.
                let mut last: Option<(S, u32)> = None;
                for (token, dst) in found {
                    let id = match last {
                        Some((d, id)) if d == dst => id,
                        _ => {
                            let next = ids.len() as u32;
                            let id = *ids.entry(dst).or_insert_with(|| {
                                states.push(dst);
                                queue.push_back(next);
                                next
                            });
                            last = Some((dst, id));
                            id
                        }
                    };
                    out.push((token, id));
                }
                if states.len() > max_states {
                    return Err(Error::Constraint(format!(
                        "the constraint's token automaton exceeds {max_states} states; simplify it or raise the limit"
                    )));
                }
                if edges.len() <= s as usize {
                    edges.resize(s as usize + 1, Vec::new());
                }
                edges[s as usize] = out;
            }
        }
        edges.resize(states.len(), Vec::new());
        let accepting = states.iter().map(|&s| accepting(s)).collect();
        Ok(Self::from_edges(0, accepting, edges))
    }

    /// Builds an automaton from per-state `(token, destination)` edges, dropping states that
    /// cannot reach acceptance.
    pub fn from_edges(start: u32, accepting: Vec<bool>, edges: Vec<Vec<(u32, u32)>>) -> Self {
        let n = accepting.len();
        // Reverse breadth-first search from the accepting states.
        let mut reverse: Vec<Vec<u32>> = vec![Vec::new(); n];
        for (s, out) in edges.iter().enumerate() {
            for &(_, d) in out {
                reverse[d as usize].push(s as u32);
            }
        }
        let mut distance = vec![u32::MAX; n];
        let mut queue = VecDeque::new();
        for (s, &acc) in accepting.iter().enumerate() {
            if acc {
                distance[s] = 0;
                queue.push_back(s as u32);
            }
        }
        while let Some(d) = queue.pop_front() {
            for &s in &reverse[d as usize] {
                if distance[s as usize] == u32::MAX {
                    distance[s as usize] = distance[d as usize] + 1;
                    queue.push_back(s);
                }
            }
        }
        let mut sets: HashMap<Vec<u32>, u32> = HashMap::new();
        let groups = edges
            .into_iter()
            .map(|out| {
                let mut by_dst: HashMap<u32, Vec<u32>> = HashMap::new();
                for (t, d) in out {
                    if distance[d as usize] != u32::MAX {
                        by_dst.entry(d).or_default().push(t);
                    }
                }
                // Set ids in destination order, so that they (and the lattice's summation order)
                // do not depend on the hash map's per-process seed.
                let mut by_dst: Vec<(u32, Vec<u32>)> = by_dst.into_iter().collect();
                by_dst.sort_unstable_by_key(|&(to, _)| to);
                let mut g: Vec<TokenGroup> = by_dst
                    .into_iter()
                    .map(|(to, mut tokens)| {
                        tokens.sort_unstable();
                        let next = sets.len() as u32;
                        let set = *sets.entry(tokens.clone()).or_insert(next);
                        TokenGroup { to, tokens, set }
                    })
                    .collect();
                g.sort_by_key(|g| g.to);
                g
            })
            .collect();
        Self::assemble(start, accepting, groups, distance, sets.len())
    }

    /// The automaton that accepts any content (every non-PAD token, any length).
    pub fn any(index: &TokenIndex) -> Self {
        let tokens: Vec<u32> = (0..index.vocab_size() as u32)
            .filter(|&t| !index.bytes(t).is_empty())
            .collect();
        Self::assemble(
            0,
            vec![true],
            vec![vec![TokenGroup { to: 0, tokens, set: 0 }]],
            vec![0],
            1,
        )
    }

    fn assemble(
        start: u32,
        accepting: Vec<bool>,
        groups: Vec<Vec<TokenGroup>>,
        distance: Vec<u32>,
        num_sets: usize,
    ) -> Self {
        let mut edges = Vec::with_capacity(groups.iter().map(Vec::len).sum());
        let mut edge_start = Vec::with_capacity(groups.len() + 1);
        for gs in &groups {
            edge_start.push(edges.len() as u32);
            edges.extend(gs.iter().map(|g| Edge { to: g.to, set: g.set }));
        }
        edge_start.push(edges.len() as u32);
        TokenAutomaton {
            start,
            accepting,
            groups,
            distance,
            num_sets,
            edges,
            edge_start,
            columns: Default::default(),
            plan: Default::default(),
        }
    }

    /// The state each state moves to on `token` (`u32::MAX`: none), computed once per token.
    pub(crate) fn column(&self, token: u32) -> &[u32] {
        let columns = self.columns.get_or_init(|| {
            let top = self.groups.iter().flatten().filter_map(|g| g.tokens.last()).max();
            (0..top.map_or(0, |&t| t as usize + 1))
                .map(|_| std::sync::OnceLock::new())
                .collect()
        });
        match columns.get(token as usize) {
            Some(cell) => cell.get_or_init(|| {
                self.groups
                    .iter()
                    .map(|gs| {
                        gs.iter()
                            .find(|g| g.tokens.binary_search(&token).is_ok())
                            .map_or(u32::MAX, |g| g.to)
                    })
                    .collect()
            }),
            None => &[],
        }
    }

    /// The groups leaving `s` as compact records, in the order of [`Self::groups`].
    pub(crate) fn edges(&self, s: u32) -> &[Edge] {
        &self.edges[self.edge_start[s as usize] as usize..self.edge_start[s as usize + 1] as usize]
    }

    /// The number of states.
    pub fn num_states(&self) -> usize {
        self.accepting.len()
    }

    /// The start state.
    pub fn start(&self) -> u32 {
        self.start
    }

    /// Whether state `s` accepts (the content may end there).
    pub fn is_accepting(&self, s: u32) -> bool {
        self.accepting[s as usize]
    }

    /// The token groups leaving state `s`.
    pub fn groups(&self, s: u32) -> &[TokenGroup] {
        &self.groups[s as usize]
    }

    /// Fewest tokens from `s` to acceptance (`u32::MAX` if none).
    pub fn distance(&self, s: u32) -> u32 {
        self.distance[s as usize]
    }

    /// Fewest content tokens any accepted sequence has, `None` if the language is empty.
    pub fn min_tokens(&self) -> Option<usize> {
        let d = self.distance[self.start as usize];
        (d != u32::MAX).then_some(d as usize)
    }

    /// Number of distinct token lists among the groups (ids `0..num_sets`).
    pub fn num_sets(&self) -> usize {
        self.num_sets
    }

    /// The plan by which the lattice computes every set's weight (made once, on first use).
    pub(crate) fn set_plan(&self) -> &crate::steer::lattice::SetPlan {
        self.plan.get_or_init(|| crate::steer::lattice::SetPlan::new(self))
    }

    /// Total number of (state, token) transitions.
    pub fn num_transitions(&self) -> usize {
        self.groups.iter().flatten().map(|g| g.tokens.len()).sum()
    }

    /// Number of (source, destination) groups.
    pub fn num_groups(&self) -> usize {
        self.groups.iter().map(Vec::len).sum()
    }

    /// The state after `tokens`, or `None` if they leave the automaton.
    pub fn run(&self, tokens: &[u32]) -> Option<u32> {
        let mut s = self.start;
        for t in tokens {
            s = self.groups[s as usize].iter().find(|g| g.tokens.contains(t))?.to;
        }
        Some(s)
    }

    /// Whether the content `tokens` is accepted.
    pub fn accepts(&self, tokens: &[u32]) -> bool {
        self.run(tokens).is_some_and(|s| self.is_accepting(s))
    }

    /// The product automaton accepting the sequences both accept. Fails past `max_states`.
    pub fn intersect(&self, other: &TokenAutomaton, vocab_size: usize, max_states: usize) -> Result<Self> {
        let product = self.intersect_within(other, vocab_size, max_states, usize::MAX)?;
        Ok(product.expect("no transition limit"))
    }

    /// [`Self::intersect`], given up (`None`) as soon as the product has more than
    /// `max_transitions` transitions (counted before states that cannot reach acceptance are
    /// dropped). Only `other` is tabulated densely (states × vocabulary), so it should be the
    /// smaller of the two.
    pub fn intersect_within(
        &self,
        other: &TokenAutomaton,
        vocab_size: usize,
        max_states: usize,
        max_transitions: usize,
    ) -> Result<Option<Self>> {
        // Dense next-state table of `other`, so each token of `self` is looked up in O(1).
        let none = u32::MAX;
        let mut table = vec![none; other.num_states() * vocab_size];
        for (s, gs) in other.groups.iter().enumerate() {
            for g in gs {
                for &t in &g.tokens {
                    table[s * vocab_size + t as usize] = g.to;
                }
            }
        }
        let mut ids: HashMap<(u32, u32), u32> = HashMap::from([((self.start, other.start), 0)]);
        let mut pairs = vec![(self.start, other.start)];
        let mut edges: Vec<Vec<(u32, u32)>> = Vec::new();
        let mut i = 0;
        let mut transitions = 0usize;
        while i < pairs.len() {
            let (a, b) = pairs[i];
            let mut out = Vec::new();
            for g in &self.groups[a as usize] {
                for &t in &g.tokens {
                    let bn = table[b as usize * vocab_size + t as usize];
                    if bn == none {
                        continue;
                    }
                    let key = (g.to, bn);
                    let next = ids.len() as u32;
                    let id = *ids.entry(key).or_insert_with(|| {
                        pairs.push(key);
                        next
                    });
                    out.push((t, id));
                }
            }
            if pairs.len() > max_states {
                return Err(Error::Constraint(format!(
                    "the intersection of the constraints exceeds {max_states} states"
                )));
            }
            transitions += out.len();
            if transitions > max_transitions {
                return Ok(None);
            }
            edges.push(out);
            i += 1;
        }
        let accepting = pairs
            .iter()
            .map(|&(a, b)| self.is_accepting(a) && other.is_accepting(b))
            .collect();
        Ok(Some(Self::from_edges(0, accepting, edges)))
    }
}
