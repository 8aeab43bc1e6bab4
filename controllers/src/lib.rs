//! # diffusion-lm-controllers
//!
//! Stock controllers for [`diffusion_lm`]: the constraints (regex, length, infill, JSON Schema,
//! grammar) and guidance terms (attribute classifiers) that steer a diffusion LM's denoising.
//!
//! The crate builds on the engine's public API; its controllers arrive together with the
//! engine's `Controller` trait. For now it re-exports the engine so downstream code can depend
//! on this crate alone:
//!
//! ```
//! use diffusion_lm_controllers::engine::{ModelConfig, NoiseSchedule};
//! let cfg = ModelConfig::tiny(64);
//! assert!(NoiseSchedule::sqrt(cfg.diffusion_steps).is_ok());
//! ```

/// The engine crate, re-exported.
pub use diffusion_lm as engine;

#[cfg(test)]
mod tests {
    #[test]
    fn engine_is_reachable_through_the_reexport() {
        let cfg = crate::engine::ModelConfig::tiny(10);
        assert!(cfg.validate().is_ok());
        assert_eq!(
            crate::engine::Denoiser::param_specs(&cfg)[0].name,
            "word_embedding.weight"
        );
    }
}
