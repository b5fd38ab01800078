//! The meta-router network (spec §5.2): independent sigmoids, the temperature clamp, exact
//! masking of padding, the gradient of the whole net (f64 gradcheck), save/load, and the
//! parameter count.

use std::collections::BTreeMap;

use brainstacks_autograd::{GradcheckOptions, Tape, Var, gradcheck};
use brainstacks_model::Result;
use brainstacks_model::router::{MetaRouter, MetaRouterConfig, pad_features};
use brainstacks_tensor::io::{TensorToWrite, write_safetensors};
use brainstacks_tensor::{DType, Device, Rng, Tensor};

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("domain{i}")).collect()
}

fn tiny_config(d_model: usize, hidden: usize, domains: usize) -> MetaRouterConfig {
    let mut c = MetaRouterConfig::new(d_model, names(domains));
    c.hidden = hidden;
    c
}

fn tiny(d_model: usize, hidden: usize, domains: usize, seed: u64) -> Result<MetaRouter> {
    MetaRouter::new(&Tape::new(), tiny_config(d_model, hidden, domains), DType::F32, &mut Rng::new(seed))
}

fn randn(seed: u64, shape: &[usize], dtype: DType) -> Tensor {
    Tensor::randn(&mut Rng::new(seed), 0.0, 1.0, shape, dtype, &Device::Cpu).unwrap()
}

fn ones(shape: &[usize]) -> Tensor {
    Tensor::ones(shape, DType::F32, &Device::Cpu).unwrap()
}

fn vals(t: &Tensor) -> Vec<f64> {
    t.to_vec_f64().unwrap()
}

/// A copy of `net` whose parameter `name` is replaced by `value` (same tape-free leaves).
fn with_param(net: &MetaRouter, name: &str, value: Tensor) -> Result<MetaRouter> {
    let tape = Tape::new();
    let params =
        net.named_params().into_iter().map(|(n, p)| tape.param(if n == name { value.clone() } else { p.tensor().clone() })).collect();
    MetaRouter::from_params(net.config().clone(), params)
}

#[test]
fn parameter_count_matches_the_formula_and_the_spec() -> Result<()> {
    // H (d_model + 3H + D + 13) + 2, derived in the module docs.
    assert_eq!(MetaRouterConfig::param_count(2048, 512, 4), 512 * (2048 + 1536 + 4 + 13) + 2);
    assert_eq!(MetaRouterConfig::param_count(2048, 512, 4), 1_843_714); // spec: "1.84M"
    assert_eq!(MetaRouterConfig::param_count(3840, 512, 5), 2_761_730); // spec: "2.76M"
    let net = MetaRouter::new(&Tape::new(), MetaRouterConfig::new(2048, names(4)), DType::F32, &mut Rng::new(0))?;
    assert_eq!(net.num_params(), 1_843_714);
    assert_eq!(net.params().len(), net.config().param_shapes().len());
    assert_eq!(tiny(6, 8, 3, 0)?.num_params(), MetaRouterConfig::param_count(6, 8, 3));
    Ok(())
}

#[test]
fn init_follows_the_spec() -> Result<()> {
    let net = MetaRouter::new(&Tape::new(), MetaRouterConfig::new(64, names(4)), DType::F32, &mut Rng::new(3))?;
    let p: BTreeMap<&str, Vec<f64>> = net.named_params().into_iter().map(|(n, v)| (n, vals(v.tensor()))).collect();
    let std = |v: &[f64]| (v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64).sqrt();
    // Queries N(0, 0.02^2): 2048 draws give a sample std within a few percent of 0.02.
    assert!((std(&p["domain_queries"]) - 0.02).abs() < 0.002, "{}", std(&p["domain_queries"]));
    // Kaiming-uniform with bound 1/sqrt(fan_in) for weight and bias.
    for (name, fan_in) in [("in_proj.weight", 64.0), ("in_proj.bias", 64.0), ("fuse1.weight", 1024.0), ("head.bias", 512.0)] {
        let bound = 1.0 / f64::sqrt(fan_in);
        assert!(p[name].iter().all(|x| x.abs() <= bound), "{name}");
        assert!(p[name].iter().any(|x| x.abs() > 0.5 * bound), "{name}");
    }
    assert!(p["in_norm.weight"].iter().all(|&x| x == 1.0) && p["fuse_norm.bias"].iter().all(|&x| x == 0.0));
    assert_eq!(p["log_tau"], vec![0.0]);
    assert_eq!(net.temperature()?, 1.0);
    // Same seed, same router.
    let again = MetaRouter::new(&Tape::new(), MetaRouterConfig::new(64, names(4)), DType::F32, &mut Rng::new(3))?;
    for ((_, a), (_, b)) in net.named_params().into_iter().zip(again.named_params()) {
        assert_eq!(vals(a.tensor()), vals(b.tensor()));
    }
    Ok(())
}

#[test]
fn outputs_are_independent_sigmoids() -> Result<()> {
    let net = tiny(6, 8, 3, 1)?;
    let h = randn(2, &[4, 5, 6], DType::F32);
    let p = net.probs(&h, &ones(&[4, 5]))?;
    assert_eq!(p.shape(), &[4, 3]);
    let pv = vals(&p);
    assert!(pv.iter().all(|&x| x > 0.0 && x < 1.0));
    // Not a softmax: the rows do not sum to 1.
    assert!(pv.chunks(3).any(|row| (row.iter().sum::<f64>() - 1.0).abs() > 0.05), "{pv:?}");
    // probs = sigmoid(logits), elementwise.
    let z = vals(&net.logits(&h, &ones(&[4, 5]))?);
    for (p, z) in pv.iter().zip(&z) {
        assert!((p - 1.0 / (1.0 + (-z).exp())).abs() < 1e-6);
    }

    // Changing domain 1's query changes only domain 1's output: nothing couples the domains.
    let mut q = vals(net.named_params().iter().find(|(n, _)| *n == "domain_queries").unwrap().1.tensor());
    // Not a constant shift: x is layer-normed (weight 1, bias 0 at init), so its entries sum to 0
    // and a constant added to a query would not move any score.
    for (j, v) in q[8..16].iter_mut().enumerate() {
        *v += 0.3 * j as f64;
    }
    let moved = with_param(&net, "domain_queries", Tensor::from_vec(q.iter().map(|&x| x as f32).collect(), &[3, 8], &Device::Cpu)?)?;
    let z2 = vals(&moved.logits(&h, &ones(&[4, 5]))?);
    for b in 0..4 {
        assert_eq!(z[b * 3], z2[b * 3]);
        assert_eq!(z[b * 3 + 2], z2[b * 3 + 2]);
        assert!((z[b * 3 + 1] - z2[b * 3 + 1]).abs() > 1e-6);
    }

    // One domain works.
    let one = tiny(6, 8, 1, 4)?;
    let p1 = one.probs(&h, &ones(&[4, 5]))?;
    assert_eq!(p1.shape(), &[4, 1]);
    assert!(vals(&p1).iter().all(|&x| x > 0.0 && x < 1.0));
    Ok(())
}

#[test]
fn temperature_is_clamped_to_its_range() -> Result<()> {
    let net = tiny(6, 8, 3, 5)?;
    let h = randn(6, &[2, 4, 6], DType::F32);
    let m = ones(&[2, 4]);
    let z1 = vals(&net.logits(&h, &m)?);
    for (log_tau, tau) in [(10.0f32, 3.0), (-10.0, 0.3), (0.5, 0.5f64.exp())] {
        let moved = with_param(&net, "log_tau", Tensor::from_vec(vec![log_tau], &[1], &Device::Cpu)?)?;
        assert!((moved.temperature()? - tau).abs() < 1e-6, "log_tau {log_tau}");
        let z = vals(&moved.logits(&h, &m)?);
        for (a, b) in z.iter().zip(&z1) {
            assert!((a * tau - b).abs() < 1e-5 * b.abs().max(1.0), "log_tau {log_tau}: {a} * {tau} vs {b}");
        }
    }
    // Pushed far past the range, log_tau gets no gradient through the clamp.
    let tape = Tape::new();
    let params: Vec<Var> = net
        .named_params()
        .into_iter()
        .map(|(n, p)| {
            tape.param(if n == "log_tau" { Tensor::from_vec(vec![10f32], &[1], &Device::Cpu).unwrap() } else { p.tensor().clone() })
        })
        .collect();
    let far = MetaRouter::from_params(net.config().clone(), params)?;
    let loss = far.forward(&Var::constant(h.clone()), &m, None)?.sum_all()?;
    let grads = tape.backward(&loss)?;
    let log_tau = far.named_params().into_iter().find(|(n, _)| *n == "log_tau").unwrap().1.clone();
    assert_eq!(grads.get(&log_tau).map(|g| vals(g)[0]).unwrap_or(0.0), 0.0);
    Ok(())
}

#[test]
fn padding_does_not_change_the_output() -> Result<()> {
    let net = tiny(6, 8, 3, 7)?;
    let short = randn(8, &[3, 6], DType::F32);
    let alone = vals(&net.logits(&short.unsqueeze(0)?, &ones(&[1, 3]))?);
    // The same prompt padded to 9 tokens, with garbage (huge values) where the mask is 0.
    let garbage = randn(9, &[6, 6], DType::F32).mul_scalar(1e6)?;
    let padded = Tensor::cat(&[&short, &garbage], 0usize)?.unsqueeze(0)?;
    let mask = Tensor::from_vec(vec![1f32, 1., 1., 0., 0., 0., 0., 0., 0.], &[1, 9], &Device::Cpu)?;
    let z = vals(&net.logits(&padded, &mask)?);
    for (a, b) in alone.iter().zip(&z) {
        assert!((a - b).abs() < 1e-6, "{alone:?} vs {z:?}");
    }
    // In a batch with a longer prompt (pad_features): the same logits for the short one.
    let long = randn(10, &[7, 6], DType::F32);
    let (x, m) = pad_features(&[&long, &short])?;
    let zb = vals(&net.logits(&x, &m)?);
    for (a, b) in alone.iter().zip(&zb[3..]) {
        assert!((a - b).abs() < 1e-6);
    }
    // A U8 mask means the same.
    let m8 = m.to_dtype(DType::U8)?;
    assert_eq!(vals(&net.logits(&x, &m8)?), zb);
    Ok(())
}

#[test]
fn gradcheck_of_the_whole_network_in_f64() -> Result<()> {
    let mut cfg = tiny_config(6, 8, 3);
    cfg.dropout = 0.1; // dropout is off in evaluation (rng None), whatever its rate
    let net = MetaRouter::new(&Tape::new(), cfg.clone(), DType::F64, &mut Rng::new(11))?;
    let mut inputs: Vec<Tensor> = net.params().iter().map(|p| p.tensor().clone()).collect();
    // Queries at 0.02 give near-uniform attention; larger ones exercise the softmax harder.
    let qi = 4;
    inputs[qi] = inputs[qi].mul_scalar(40.0)?;
    inputs[qi + 3] = inputs[qi + 3].mul_scalar(40.0)?;
    // log_tau inside the clamp range so its gradient is defined.
    let lt = inputs.len() - 1;
    inputs[lt] = Tensor::from_vec(vec![0.3f64], &[1], &Device::Cpu)?;
    inputs.push(randn(12, &[2, 4, 6], DType::F64)); // the features, also checked
    let mask = Tensor::from_vec(vec![1f64, 1., 1., 1., 1., 1., 0., 0.], &[2, 4], &Device::Cpu)?;
    let n = inputs.len() - 1;
    gradcheck(
        |vars| {
            let net = MetaRouter::from_params(cfg.clone(), vars[..n].to_vec())
                .map_err(|e| brainstacks_autograd::Error::Invalid { op: "router".into(), msg: e.to_string() })?;
            net.forward(&vars[n], &mask, None).map_err(|e| brainstacks_autograd::Error::Invalid { op: "router".into(), msg: e.to_string() })
        },
        &inputs,
        GradcheckOptions::default(),
    )
    .map_err(Into::into)
}

#[test]
fn dropout_only_in_training_and_reproducible() -> Result<()> {
    let net = tiny(6, 8, 3, 13)?;
    let h = Var::constant(randn(14, &[3, 5, 6], DType::F32));
    let m = ones(&[3, 5]);
    let eval = vals(net.forward(&h, &m, None)?.tensor());
    let a = vals(net.forward(&h, &m, Some(&mut Rng::new(1)))?.tensor());
    let b = vals(net.forward(&h, &m, Some(&mut Rng::new(1)))?.tensor());
    let c = vals(net.forward(&h, &m, Some(&mut Rng::new(2)))?.tensor());
    assert_eq!(a, b);
    assert_ne!(a, eval);
    assert_ne!(a, c);
    // Rate 0: training equals evaluation.
    let mut cfg = tiny_config(6, 8, 3);
    cfg.dropout = 0.0;
    let no_drop = MetaRouter::new(&Tape::new(), cfg, DType::F32, &mut Rng::new(13))?;
    assert_eq!(vals(no_drop.forward(&h, &m, Some(&mut Rng::new(1)))?.tensor()), vals(no_drop.forward(&h, &m, None)?.tensor()));
    Ok(())
}

#[test]
fn save_and_load_round_trip() -> Result<()> {
    let mut cfg = tiny_config(6, 8, 3);
    cfg.domains = vec!["chat".into(), "code \"py\"".into(), "math".into()];
    cfg.tau_min = 0.25;
    let net = MetaRouter::new(&Tape::new(), cfg.clone(), DType::F32, &mut Rng::new(17))?;
    let dir = std::env::temp_dir().join(format!("bs-router-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("router.safetensors");
    net.save(&path)?;
    let tape = Tape::new();
    let back = MetaRouter::load(&path, &tape)?;
    assert_eq!(back.config(), &cfg);
    let h = randn(18, &[2, 5, 6], DType::F32);
    let m = Tensor::from_vec(vec![1f32, 1., 1., 1., 1., 1., 1., 0., 0., 0.], &[2, 5], &Device::Cpu)?;
    assert_eq!(vals(&back.logits(&h, &m)?), vals(&net.logits(&h, &m)?));
    assert!(back.params().iter().all(|p| p.requires_grad()));

    // A file of another format is refused, naming the format.
    let t = TensorToWrite::from_tensor("x", &ones(&[1]))?;
    let other = dir.join("other.safetensors");
    write_safetensors(&other, &[t], &BTreeMap::from([("format".to_string(), "brainstacks-stack".to_string())]))?;
    let err = MetaRouter::load(&other, &Tape::new()).err().unwrap().to_string();
    assert!(err.contains("brainstacks-router"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
    Ok(())
}

#[test]
fn bad_inputs_are_errors_not_panics() -> Result<()> {
    let net = tiny(6, 8, 3, 19)?;
    let h = randn(20, &[2, 4, 6], DType::F32);
    let empty_row = Tensor::from_vec(vec![1f32, 1., 0., 0., 0., 0., 0., 0.], &[2, 4], &Device::Cpu)?;
    assert!(net.probs(&h, &empty_row).err().unwrap().to_string().contains("no token"));
    assert!(net.probs(&h, &ones(&[2, 3])).is_err());
    assert!(net.probs(&randn(20, &[2, 4, 5], DType::F32), &ones(&[2, 4])).is_err());
    assert!(net.probs(&randn(20, &[2, 4, 6], DType::F64), &ones(&[2, 4])).is_err());
    let mut cfg = tiny_config(6, 8, 2);
    cfg.domains = vec!["a".into(), "a".into()];
    assert!(cfg.validate().is_err());
    for (dropout, tau_min, tau_max) in [(1.0, 0.3, 3.0), (0.1, 0.0, 3.0), (0.1, 3.0, 0.3), (0.1, 0.3, f64::INFINITY)] {
        let c = MetaRouterConfig { dropout, tau_min, tau_max, ..tiny_config(6, 8, 2) };
        assert!(MetaRouter::new(&Tape::new(), c, DType::F32, &mut Rng::new(1)).is_err());
    }
    assert!(MetaRouter::new(&Tape::new(), tiny_config(6, 8, 0), DType::F32, &mut Rng::new(1)).is_err());
    assert!(pad_features(&[]).is_err());
    Ok(())
}
