//! A [`Stack`] of controllers in their roles, and its preparation for one sequence length
//! ([`PreparedStack`]): the constraints' unary rules folded into one additive score mask and
//! their automata intersected into one, checked for satisfiability before sampling.

use crate::steer::automaton::TokenAutomaton;
use crate::steer::roles::{Constraint, ConstraintContext, Guide, Repair, Restriction, UnaryConstraint};
use crate::{Error, Result, TextTokenizer};

/// Controllers composed for one generation: any number of constraints, guides and repairs.
///
/// ```
/// use diffusion_lm::steer::Stack;
/// let stack = Stack::new();
/// assert!(stack.is_empty());
/// ```
#[derive(Default)]
pub struct Stack {
    constraints: Vec<Box<dyn Constraint>>,
    guides: Vec<Box<dyn Guide>>,
    repairs: Vec<Box<dyn Repair>>,
}

impl Stack {
    /// An empty stack: plain generation.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a hard constraint.
    pub fn constrain(mut self, constraint: impl Constraint + 'static) -> Self {
        self.constraints.push(Box::new(constraint));
        self
    }

    /// Adds a guide.
    pub fn guide(mut self, guide: impl Guide + 'static) -> Self {
        self.guides.push(Box::new(guide));
        self
    }

    /// Adds a repair.
    pub fn repair(mut self, repair: impl Repair + 'static) -> Self {
        self.repairs.push(Box::new(repair));
        self
    }

    /// Adds a boxed constraint.
    pub fn push_constraint(&mut self, constraint: Box<dyn Constraint>) {
        self.constraints.push(constraint);
    }

    /// Adds a boxed guide.
    pub fn push_guide(&mut self, guide: Box<dyn Guide>) {
        self.guides.push(guide);
    }

    /// Adds a boxed repair.
    pub fn push_repair(&mut self, repair: Box<dyn Repair>) {
        self.repairs.push(repair);
    }

    /// The hard constraints, in the order added.
    pub fn constraints(&self) -> &[Box<dyn Constraint>] {
        &self.constraints
    }

    /// The guides, in the order added.
    pub fn guides(&self) -> &[Box<dyn Guide>] {
        &self.guides
    }

    /// The repairs, in the order added.
    pub fn repairs(&self) -> &[Box<dyn Repair>] {
        &self.repairs
    }

    /// Whether the stack holds nothing.
    pub fn is_empty(&self) -> bool {
        self.constraints.is_empty() && self.guides.is_empty() && self.repairs.is_empty()
    }

    /// Every constraint's independent check of one generated sequence (`ids`, PAD tail
    /// included); the first failure is [`Error::CheckFailed`].
    pub fn check(&self, ids: &[u32], tokenizer: &TextTokenizer) -> Result<()> {
        let text = tokenizer.decode_content(ids);
        for c in &self.constraints {
            c.check(&text, ids, tokenizer).map_err(|e| Error::CheckFailed {
                controller: c.name(),
                message: e.to_string(),
            })?;
        }
        Ok(())
    }

    /// Builds the constraints' restrictions for `ctx.seq_len` tokens and checks that some
    /// sequence satisfies them all.
    pub fn prepare(&self, ctx: &ConstraintContext) -> Result<PreparedStack> {
        PreparedStack::prepare(&self.constraints, ctx)
    }
}

/// Constraints prepared for one sequence length: the additive score mask and the product
/// automaton.
pub struct PreparedStack {
    /// `len × vocab` additive mask (0 or −∞); `None` when no unary constraint exists.
    pub mask: Option<Vec<f32>>,
    /// The intersection of every automaton constraint, or the any-content automaton.
    pub automaton: TokenAutomaton,
    /// Whether any hard constraint exists (otherwise plain clamping is used).
    pub has_hard: bool,
}

/// Limit on the product automaton's states.
pub const MAX_PRODUCT_STATES: usize = 200_000;

impl PreparedStack {
    fn prepare(constraints: &[Box<dyn Constraint>], ctx: &ConstraintContext) -> Result<Self> {
        let (len, vocab, pad) = (ctx.seq_len, ctx.index.vocab_size(), ctx.index.pad_id());
        let mut mask: Option<Vec<f32>> = None;
        let mut automaton: Option<TokenAutomaton> = None;
        let mut has_hard = false;
        for c in constraints {
            for r in c.restrictions(ctx)? {
                has_hard = true;
                match r {
                    Restriction::Unary(u) => {
                        let m = mask.get_or_insert_with(|| vec![0.0; len * vocab]);
                        apply_unary(m, &u, len, vocab, pad, &c.name())?;
                    }
                    Restriction::Automaton(a) => {
                        if a.min_tokens().is_none() {
                            return Err(Error::Unsatisfiable(format!("{} accepts no token sequence", c.name())));
                        }
                        if let Some(k) = a.min_tokens().filter(|&k| k > len) {
                            return Err(Error::Unsatisfiable(format!(
                                "{} needs at least {k} tokens but the sequence holds {len}",
                                c.name()
                            )));
                        }
                        automaton = Some(match automaton {
                            None => a,
                            Some(prev) => prev.intersect(&a, vocab, MAX_PRODUCT_STATES)?,
                        });
                    }
                }
            }
        }
        let automaton = automaton.unwrap_or_else(|| TokenAutomaton::any(ctx.index));
        let stack = PreparedStack {
            mask,
            automaton,
            has_hard,
        };
        if has_hard {
            if !stack.fits(len, vocab, pad) {
                let names: Vec<String> = constraints.iter().map(|c| c.name()).collect();
                return Err(Error::Unsatisfiable(format!(
                    "no sequence of {len} tokens satisfies all of: {}",
                    names.join(", ")
                )));
            }
        }
        Ok(stack)
    }

    /// The stack further restricted to the sequences `extra` also accepts, or `None` when the
    /// two together leave no sequence of `ctx.seq_len` tokens, or their product exceeds
    /// [`MAX_PRODUCT_STATES`] states or `max_transitions` transitions (what the projection's
    /// cost grows with).
    pub fn narrowed(
        &self,
        extra: &TokenAutomaton,
        ctx: &ConstraintContext,
        max_transitions: usize,
    ) -> Option<PreparedStack> {
        let (len, vocab, pad) = (ctx.seq_len, ctx.index.vocab_size(), ctx.index.pad_id());
        // `intersect_within` tabulates its argument densely: the stack's automaton, the smaller.
        let automaton = extra
            .intersect_within(&self.automaton, vocab, MAX_PRODUCT_STATES, max_transitions)
            .ok()??;
        let stack = PreparedStack {
            mask: self.mask.clone(),
            automaton,
            has_hard: self.has_hard,
        };
        stack.fits(len, vocab, pad).then_some(stack)
    }

    /// Whether some sequence of `len` tokens satisfies the stack. Without a unary rule the
    /// automaton alone decides: a shortest accepted sequence fits or not. With one, a best
    /// sequence under all-zero scores exists or not.
    fn fits(&self, len: usize, vocab: usize, pad: u32) -> bool {
        match &self.mask {
            None => self.automaton.min_tokens().is_some_and(|k| k <= len),
            Some(_) => {
                let zeros = self.masked(vec![0.0; len * vocab]);
                crate::steer::projection::best_sequence(&zeros, len, vocab, &self.automaton, pad).is_some()
            }
        }
    }

    /// Adds the unary mask to one sequence's scores.
    pub fn masked(&self, mut scores: Vec<f32>) -> Vec<f32> {
        if let Some(m) = &self.mask {
            for (s, m) in scores.iter_mut().zip(m) {
                *s += m;
            }
        }
        scores
    }
}

fn apply_unary(mask: &mut [f32], u: &UnaryConstraint, len: usize, vocab: usize, pad: u32, name: &str) -> Result<()> {
    let neg = f32::NEG_INFINITY;
    for &(p, t) in &u.fixed {
        if p >= len || t as usize >= vocab {
            return Err(Error::Unsatisfiable(format!(
                "{name} fixes token {t} at position {p}, outside the {len}-token sequence"
            )));
        }
        for v in 0..vocab {
            if v != t as usize {
                mask[p * vocab + v] = neg;
            }
        }
    }
    for &t in &u.banned {
        if t != pad && (t as usize) < vocab {
            for p in 0..len {
                mask[p * vocab + t as usize] = neg;
            }
        }
    }
    if let Some((lo, hi)) = u.content_len {
        if lo > hi || lo > len {
            return Err(Error::Unsatisfiable(format!(
                "{name} asks for {lo}..={hi} content tokens but the sequence holds {len}"
            )));
        }
        for p in 0..len {
            if p < lo {
                mask[p * vocab + pad as usize] = neg; // content must continue
            }
            if p >= hi {
                for v in 0..vocab {
                    if v != pad as usize {
                        mask[p * vocab + v] = neg; // PAD tail
                    }
                }
            }
        }
    }
    Ok(())
}
