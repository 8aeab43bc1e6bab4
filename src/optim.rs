//! AdamW with a saveable state, a linear learning-rate schedule, and EMA weights.
//!
//! candle-nn's `AdamW` keeps its moment estimates private, so a run could not be resumed
//! exactly; this one stores them by parameter name (`m.<name>`, `v.<name>`) in the training state.

use std::collections::HashMap;

use candle_core::{backprop::GradStore, Tensor, Var};

use crate::Result;

/// AdamW hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// Decoupled-weight-decay Adam over named variables.
pub struct AdamW {
    vars: Vec<(String, Var)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    step: usize,
    cfg: AdamWConfig,
}

impl AdamW {
    /// `vars` are sorted by name so the state layout does not depend on map order.
    pub fn new(mut vars: Vec<(String, Var)>, cfg: AdamWConfig) -> Result<Self> {
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let m = vars
            .iter()
            .map(|(_, v)| v.zeros_like())
            .collect::<candle_core::Result<Vec<_>>>()?;
        let v = vars
            .iter()
            .map(|(_, v)| v.zeros_like())
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(AdamW {
            vars,
            m,
            v,
            step: 0,
            cfg,
        })
    }

    pub fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    /// Number of updates applied so far.
    pub fn step_count(&self) -> usize {
        self.step
    }

    /// Global L2 norm of the gradients.
    pub fn grad_norm(&self, grads: &GradStore) -> Result<f64> {
        // Summed on the device and read once: one host sync per step instead of one per tensor.
        let mut total: Option<Tensor> = None;
        for (_, var) in &self.vars {
            if let Some(g) = grads.get(var.as_tensor()) {
                let s = g.sqr()?.sum_all()?;
                total = Some(match total {
                    None => s,
                    Some(t) => (t + s)?,
                });
            }
        }
        Ok(match total {
            None => 0.0,
            Some(t) => (t.to_scalar::<f32>()? as f64).sqrt(),
        })
    }

    /// Applies one update with learning rate `lr`; gradients are scaled by `grad_scale` first
    /// (for clipping). Variables without a gradient are left alone.
    pub fn step(&mut self, grads: &GradStore, lr: f64, grad_scale: f64) -> Result<()> {
        self.step += 1;
        let c = self.cfg;
        let bc1 = 1.0 - c.beta1.powi(self.step as i32);
        let bc2 = 1.0 - c.beta2.powi(self.step as i32);
        for (i, (_, var)) in self.vars.iter().enumerate() {
            let Some(g) = grads.get(var.as_tensor()) else { continue };
            let g = if grad_scale != 1.0 {
                (g * grad_scale)?
            } else {
                g.clone()
            };
            let m = ((&self.m[i] * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
            let v = ((&self.v[i] * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let update = ((&m / bc1)? / ((&v / bc2)?.sqrt()? + c.eps)?)?;
            let decayed = (var.as_tensor() * (1.0 - lr * c.weight_decay))?;
            var.set(&(decayed - (update * lr)?)?)?;
            self.m[i] = m.detach();
            self.v[i] = v.detach();
        }
        Ok(())
    }

    /// Whether any moment tensor records an op (it never should: see [`AdamW::step`]).
    pub fn state_records_ops(&self) -> bool {
        self.m.iter().chain(&self.v).any(|t| t.track_op())
    }

    /// The optimizer state as named tensors (`m.<name>`, `v.<name>`).
    pub fn state_tensors(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for (i, (name, _)) in self.vars.iter().enumerate() {
            out.insert(format!("m.{name}"), self.m[i].clone());
            out.insert(format!("v.{name}"), self.v[i].clone());
        }
        out
    }

    /// Restores the state saved by [`AdamW::state_tensors`] after `step` updates.
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, step: usize) -> std::result::Result<(), String> {
        for (i, (name, var)) in self.vars.iter().enumerate() {
            for (prefix, slot) in [("m", &mut self.m[i]), ("v", &mut self.v[i])] {
                let key = format!("{prefix}.{name}");
                let t = tensors
                    .get(&key)
                    .ok_or_else(|| format!("optimizer state `{key}` is missing"))?;
                if t.dims() != var.dims() {
                    return Err(format!(
                        "optimizer state `{key}` has shape {:?}, expected {:?}",
                        t.dims(),
                        var.dims()
                    ));
                }
                *slot = t.clone();
            }
        }
        self.step = step;
        Ok(())
    }
}

/// Learning rate at `step` of `total`: linear warm-up over `warmup` steps, then linear decay to 0.
pub fn linear_lr(base: f64, step: usize, total: usize, warmup: usize) -> f64 {
    if step < warmup {
        return base * (step + 1) as f64 / warmup as f64;
    }
    let rest = total.saturating_sub(warmup).max(1);
    base * (1.0 - (step - warmup) as f64 / rest as f64).max(0.0)
}

/// Exponential moving average of parameters, used for sampling.
///
/// The decay ramps up as `min(decay, (1 + n) / (10 + n))` so early averages do not remember the
/// random initialisation for thousands of steps.
pub struct Ema {
    pub decay: f64,
    pub tensors: HashMap<String, Tensor>,
    pub updates: usize,
}

impl Ema {
    pub fn new(vars: &[(String, Var)], decay: f64) -> Result<Self> {
        let tensors = vars
            .iter()
            .map(|(n, v)| Ok((n.clone(), v.as_tensor().detach().copy()?)))
            .collect::<Result<HashMap<_, _>>>()?;
        Ok(Ema {
            decay,
            tensors,
            updates: 0,
        })
    }

    pub fn update(&mut self, vars: &[(String, Var)]) -> Result<()> {
        self.updates += 1;
        let n = self.updates as f64;
        let d = self.decay.min((1.0 + n) / (10.0 + n));
        for (name, var) in vars {
            if let Some(e) = self.tensors.get_mut(name) {
                // Detached: an average computed from a variable records its op, and each new
                // average would otherwise hold the previous one (all history) alive.
                *e = ((&*e * d)? + (var.as_tensor().detach() * (1.0 - d))?)?.detach();
            }
        }
        Ok(())
    }
}
