//! AdamW with a saveable state, a linear learning-rate schedule, and EMA weights.
//!
//! candle-nn's `AdamW` keeps its moment estimates private, so a run could not be resumed
//! exactly; this one stores them by parameter name (`m.<name>`, `v.<name>`) in the training state.
//!
//! Both the optimizer and the EMA work on *flat* buffers: every parameter's gradient is gathered
//! into one vector, and the moments and the average are single vectors. An update is then about
//! fifteen whole-buffer operations plus one copy per parameter, instead of about twenty
//! operations per parameter. On a GPU a small model's training step is bound by the number of
//! kernel launches, so this is what PyTorch's multi-tensor ("foreach") AdamW does too.

use std::collections::HashMap;

use candle_core::{backprop::GradStore, DType, Tensor, Var};

use crate::Result;

/// AdamW hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    /// Decay rate of the first-moment (mean) estimate.
    pub beta1: f64,
    /// Decay rate of the second-moment (uncentred variance) estimate.
    pub beta2: f64,
    /// Added to `√v̂` in the denominator for numerical stability.
    pub eps: f64,
    /// Decoupled weight decay: each step scales the parameters by `1 - lr · weight_decay`.
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

/// One Adam update: the new moments and the bias-corrected direction `m̂ / (√v̂ + ε)` for
/// gradient `g` at step `step` (from 1). Absent moments start at zero. Shared by [`AdamW`] and
/// guidance's Adam rule ([`Adam`]).
fn adam_direction(
    m: Option<&Tensor>,
    v: Option<&Tensor>,
    g: &Tensor,
    c: &AdamWConfig,
    step: usize,
) -> Result<(Tensor, Tensor, Tensor)> {
    let m = match m {
        Some(m) => ((m * c.beta1)? + (g * (1.0 - c.beta1))?)?,
        None => (g * (1.0 - c.beta1))?,
    };
    let v = match v {
        Some(v) => ((v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?,
        None => (g.sqr()? * (1.0 - c.beta2))?,
    };
    let bc1 = 1.0 - c.beta1.powi(step as i32);
    let bc2 = 1.0 - c.beta2.powi(step as i32);
    let update = ((&m / bc1)? / ((&v / bc2)?.sqrt()? + c.eps)?)?;
    Ok((m, v, update))
}

/// Adam on a single tensor that is not a variable (the latent under guidance): the direction of
/// each ascent step. Moments start at zero.
pub(crate) struct Adam {
    m: Option<Tensor>,
    v: Option<Tensor>,
    step: usize,
    cfg: AdamWConfig,
}

impl Adam {
    pub(crate) fn new(cfg: AdamWConfig) -> Self {
        Adam {
            m: None,
            v: None,
            step: 0,
            cfg,
        }
    }

    /// The bias-corrected direction `m̂ / (√v̂ + ε)` after gradient `g`.
    pub(crate) fn direction(&mut self, g: &Tensor) -> Result<Tensor> {
        self.step += 1;
        let (m, v, update) = adam_direction(self.m.as_ref(), self.v.as_ref(), g, &self.cfg, self.step)?;
        self.m = Some(m);
        self.v = Some(v);
        Ok(update)
    }
}

/// Adagrad on a single tensor: the direction `g / (√Σg² + ε)` of each step.
pub(crate) struct Adagrad {
    sum: Option<Tensor>,
}

impl Adagrad {
    pub(crate) fn new() -> Self {
        Adagrad { sum: None }
    }

    /// The direction after gradient `g`.
    pub(crate) fn direction(&mut self, g: &Tensor) -> Result<Tensor> {
        let sum = match &self.sum {
            None => g.sqr()?,
            Some(prev) => (prev + g.sqr()?)?,
        };
        let update = (g / (sum.sqrt()? + 1e-10)?)?;
        self.sum = Some(sum);
        Ok(update)
    }
}

/// Where each of a list of tensors lives in one flat vector (in list order).
#[derive(Debug, Clone)]
struct FlatLayout {
    /// `(start, length, shape)` per tensor.
    slots: Vec<(usize, usize, Vec<usize>)>,
    total: usize,
}

impl FlatLayout {
    fn new<'a>(shapes: impl Iterator<Item = &'a [usize]>) -> Self {
        let mut slots = Vec::new();
        let mut total = 0;
        for shape in shapes {
            let n = shape.iter().product::<usize>();
            slots.push((total, n, shape.to_vec()));
            total += n;
        }
        FlatLayout { slots, total }
    }

    /// The tensors, flattened and concatenated (one copy each).
    fn gather(tensors: &[Tensor]) -> Result<Tensor> {
        let flat = tensors
            .iter()
            .map(|t| t.detach().flatten_all())
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Tensor::cat(&flat, 0)?)
    }

    /// Tensor `i` as a view into `flat` (no copy).
    fn view(&self, flat: &Tensor, i: usize) -> Result<Tensor> {
        let (start, len, shape) = &self.slots[i];
        Ok(flat.narrow(0, *start, *len)?.reshape(shape.as_slice())?)
    }
}

/// Decoupled-weight-decay Adam over named variables, with flat moment buffers.
pub struct AdamW {
    vars: Vec<(String, Var)>,
    layout: FlatLayout,
    /// First and second moments, flat in `vars` order.
    m: Tensor,
    v: Tensor,
    step: usize,
    cfg: AdamWConfig,
}

impl AdamW {
    /// `vars` are sorted by name so the state layout does not depend on map order.
    pub fn new(mut vars: Vec<(String, Var)>, cfg: AdamWConfig) -> Result<Self> {
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let layout = FlatLayout::new(vars.iter().map(|(_, v)| v.dims()));
        let (device, dtype) = match vars.first() {
            Some((_, v)) => (v.device().clone(), v.dtype()),
            None => (candle_core::Device::Cpu, DType::F32),
        };
        let m = Tensor::zeros(layout.total, dtype, &device)?;
        Ok(AdamW {
            v: m.clone(),
            m,
            vars,
            layout,
            step: 0,
            cfg,
        })
    }

    /// The optimised variables with their names, sorted by name (the flat-buffer order).
    pub fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    /// The current parameters, flat in [`AdamW::vars`] order (a copy).
    pub fn flat_params(&self) -> Result<Tensor> {
        FlatLayout::gather(&self.vars.iter().map(|(_, v)| v.as_tensor().clone()).collect::<Vec<_>>())
    }

    /// Applies one update with learning rate `lr` and returns the new parameters, flat in
    /// [`AdamW::vars`] order (for [`Ema::update`]).
    ///
    /// With `clip = Some(max)`, gradients are first scaled by `min(1, max / (‖g‖ + 1e-6))`, where
    /// `‖g‖` is the global L2 norm; the scale is computed on the device, so a step reads nothing
    /// back to the host. Variables without a gradient are left alone, moments included.
    pub fn step(&mut self, grads: &GradStore, lr: f64, clip: Option<f64>) -> Result<Tensor> {
        self.step += 1;
        let c = self.cfg;
        let mut has_grad = Vec::with_capacity(self.vars.len());
        let mut parts = Vec::with_capacity(self.vars.len());
        for (_, var) in &self.vars {
            match grads.get(var.as_tensor()) {
                Some(g) => {
                    has_grad.push(true);
                    parts.push(g.clone());
                }
                None => {
                    has_grad.push(false);
                    parts.push(var.zeros_like()?);
                }
            }
        }
        let mut g = FlatLayout::gather(&parts)?;
        if let Some(max) = clip {
            let norm = g.sqr()?.sum_all()?.sqrt()?;
            let scale = ((norm + 1e-6)?.recip()? * max)?.minimum(1.0)?;
            g = g.broadcast_mul(&scale)?;
        }
        let (m, v, update) = adam_direction(Some(&self.m), Some(&self.v), &g, &c, self.step)?;
        let params = self.flat_params()?;
        let mut new_params = ((&params * (1.0 - lr * c.weight_decay))? - (update * lr)?)?;
        let (mut m, mut v) = (m, v);
        if has_grad.iter().any(|&h| !h) {
            // Rare (a parameter the loss does not use): keep those entries as they were.
            let mut mask = vec![0u8; self.layout.total];
            for ((start, len, _), &h) in self.layout.slots.iter().zip(&has_grad) {
                if h {
                    mask[*start..start + len].fill(1);
                }
            }
            let mask = Tensor::from_vec(mask, self.layout.total, g.device())?;
            m = mask.where_cond(&m, &self.m)?;
            v = mask.where_cond(&v, &self.v)?;
            new_params = mask.where_cond(&new_params, &params)?;
        }
        for (i, (_, var)) in self.vars.iter().enumerate() {
            if has_grad[i] {
                var.set(&self.layout.view(&new_params, i)?)?;
            }
        }
        self.m = m.detach();
        self.v = v.detach();
        Ok(new_params.detach())
    }

    /// Whether any moment tensor records an op (it never should: see [`AdamW::step`]).
    pub fn state_records_ops(&self) -> bool {
        self.m.track_op() || self.v.track_op()
    }

    /// The optimizer state as named tensors (`m.<name>`, `v.<name>`): views into the flat moments.
    pub fn state_tensors(&self) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for (i, (name, _)) in self.vars.iter().enumerate() {
            out.insert(format!("m.{name}"), self.layout.view(&self.m, i)?);
            out.insert(format!("v.{name}"), self.layout.view(&self.v, i)?);
        }
        Ok(out)
    }

    /// Restores the state saved by [`AdamW::state_tensors`] after `step` updates.
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, step: usize) -> std::result::Result<(), String> {
        let mut moments = [Vec::new(), Vec::new()];
        for (name, var) in &self.vars {
            for (prefix, out) in ["m", "v"].iter().zip(moments.iter_mut()) {
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
                out.push(t.to_dtype(self.m.dtype()).map_err(|e| e.to_string())?);
            }
        }
        let [m, v] = moments;
        if !m.is_empty() {
            self.m = FlatLayout::gather(&m).map_err(|e| e.to_string())?;
            self.v = FlatLayout::gather(&v).map_err(|e| e.to_string())?;
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
/// random initialisation for thousands of steps. The average is one flat vector in the order of
/// the variables it was created from; [`Ema::tensors`] gives it by name.
pub struct Ema {
    /// The maximum decay, reached once the ramp `(1 + n) / (10 + n)` exceeds it.
    pub decay: f64,
    names: Vec<String>,
    layout: FlatLayout,
    flat: Tensor,
    tensors: HashMap<String, Tensor>,
    updates: usize,
}

impl Ema {
    /// Starts the average at the variables' current values.
    pub fn new(vars: &[(String, Var)], decay: f64) -> Result<Self> {
        let layout = FlatLayout::new(vars.iter().map(|(_, v)| v.dims()));
        let flat = if vars.is_empty() {
            Tensor::zeros(0, DType::F32, &candle_core::Device::Cpu)?
        } else {
            FlatLayout::gather(&vars.iter().map(|(_, v)| v.as_tensor().clone()).collect::<Vec<_>>())?
        };
        let mut ema = Ema {
            decay,
            names: vars.iter().map(|(n, _)| n.clone()).collect(),
            layout,
            flat,
            tensors: HashMap::new(),
            updates: 0,
        };
        ema.refresh_views()?;
        Ok(ema)
    }

    fn refresh_views(&mut self) -> Result<()> {
        self.tensors = self
            .names
            .iter()
            .enumerate()
            .map(|(i, n)| Ok((n.clone(), self.layout.view(&self.flat, i)?)))
            .collect::<Result<_>>()?;
        Ok(())
    }

    /// The averaged weights by parameter name (views into the flat average).
    pub fn tensors(&self) -> &HashMap<String, Tensor> {
        &self.tensors
    }

    /// Folds in new parameters, flat in the order of the variables given to [`Ema::new`] (what
    /// [`AdamW::step`] returns).
    pub fn update(&mut self, flat_params: &Tensor) -> Result<()> {
        if flat_params.dims() != self.flat.dims() {
            return Err(crate::Error::Config(format!(
                "EMA update of {:?} values, the average holds {:?}",
                flat_params.dims(),
                self.flat.dims()
            )));
        }
        self.updates += 1;
        let n = self.updates as f64;
        let d = self.decay.min((1.0 + n) / (10.0 + n));
        // Detached: an average computed from a variable records its op, and each new average
        // would otherwise hold the previous one (all history) alive.
        self.flat = ((&self.flat * d)? + (flat_params.detach() * (1.0 - d))?)?.detach();
        self.refresh_views()
    }

    /// Restores an average saved by name, after `updates` updates.
    pub fn load(&mut self, tensors: &HashMap<String, Tensor>, updates: usize) -> std::result::Result<(), String> {
        let mut parts = Vec::with_capacity(self.names.len());
        for (i, name) in self.names.iter().enumerate() {
            let t = tensors
                .get(name)
                .ok_or_else(|| format!("EMA tensor `{name}` is missing"))?;
            if t.dims() != self.layout.slots[i].2.as_slice() {
                return Err(format!(
                    "EMA tensor `{name}` has shape {:?}, expected {:?}",
                    t.dims(),
                    self.layout.slots[i].2
                ));
            }
            parts.push(t.clone());
        }
        if !parts.is_empty() {
            self.flat = FlatLayout::gather(&parts).map_err(|e| e.to_string())?;
        }
        self.updates = updates;
        self.refresh_views().map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod adamw_tests {
    use super::{AdamW, AdamWConfig};
    use candle_core::{Device, Var};

    #[test]
    fn adams_first_step_moves_every_coordinate_by_the_learning_rate() {
        let w = Var::new(&[1.0f32, -2.0], &Device::Cpu).unwrap();
        let mut opt = AdamW::new(vec![("w".into(), w.clone())], AdamWConfig::default()).unwrap();
        let loss = w.as_tensor().sqr().unwrap().sum_all().unwrap();
        opt.step(&loss.backward().unwrap(), 0.1, None).unwrap();
        let w = w.as_tensor().to_vec1::<f32>().unwrap();
        assert!((w[0] - 0.9).abs() < 1e-6 && (w[1] + 1.9).abs() < 1e-6, "{w:?}");
    }
}
