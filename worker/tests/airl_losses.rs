//! The AIRL losses, rewards, advantages and their gradients against the independent PyTorch
//! reference `scripts/make_airl_fixtures.py` (tests/fixtures/airl/losses.safetensors), to 1e-5.

mod common;

use airl::losses::*;
use airlift_worker::airl;
use common::*;
use std::collections::HashMap;
use tch::{Kind, Tensor};

fn fixture() -> HashMap<String, Tensor> {
    read_safetensors(&fixtures().join("airl").join("losses.safetensors"))
}

fn close(name: &str, ours: &Tensor, theirs: &Tensor) {
    let ours = ours.to_kind(Kind::Double).reshape([-1]);
    let theirs = theirs.to_kind(Kind::Double).reshape([-1]);
    assert_eq!(ours.size(), theirs.size(), "{name}: shape");
    let err = (&ours - &theirs).abs().max().double_value(&[]);
    assert!(err <= 1e-5, "{name}: max abs error {err:e}\nours   {ours}\ntheirs {theirs}");
}

#[test]
fn discriminator_losses_and_gradients() {
    let fx = fixture();
    for (name, form, smoothing, balance) in [
        ("disc_airl", DiscriminatorForm::Airl, 0.1, true),
        ("disc_logit", DiscriminatorForm::Logit, 0.1, true),
        ("disc_logit_plain", DiscriminatorForm::Logit, 0.0, false),
    ] {
        let f = fx["f"].copy().set_requires_grad(true);
        let d = discriminator_logits(&f, Some(&fx["policy_logp"]), form);
        let loss = discriminator_loss(
            &d,
            &fx["mask"],
            &fx["labels"],
            &DiscLossOptions {
                label_smoothing: smoothing,
                class_balance: balance,
            },
        );
        loss.backward();
        close(&format!("{name} loss"), &loss, &fx[&format!("{name}_loss")]);
        close(&format!("{name} grad"), &f.grad(), &fx[&format!("{name}_grad_f")]);
    }
}

#[test]
fn rewards_and_advantages() {
    let fx = fixture();
    let d = discriminator_logits(&fx["f"], Some(&fx["policy_logp"]), DiscriminatorForm::Airl);
    let r = token_rewards(&d, &fx["mask"], 2.0, Some(3.0));
    close("rewards", &r, &fx["rewards"]);
    let groups = Vec::<i64>::try_from(&fx["groups"]).unwrap();
    let labels = Vec::<f32>::try_from(&fx["labels"]).unwrap();
    for gamma in [0.0, 0.9] {
        let tag = if gamma == 0.0 { "g0" } else { "g09" };
        let a = group_advantages(&fx["rewards"], &fx["mask"], &groups, gamma);
        close(&format!("adv_with_expert_{tag}"), &a, &fx[&format!("adv_with_expert_{tag}")]);
        let rows: Vec<i64> = (0..6).filter(|&i| labels[i as usize] == 0.0).collect();
        let idx = Tensor::from_slice(&rows);
        let g: Vec<i64> = rows.iter().map(|&i| groups[i as usize]).collect();
        let a = group_advantages(&fx["rewards"].index_select(0, &idx), &fx["mask"].index_select(0, &idx), &g, gamma);
        close(&format!("adv_policy_only_{tag}"), &a, &fx[&format!("adv_policy_only_{tag}")]);
    }
}

#[test]
fn ppo_kl_sft_losses_and_gradients() {
    let fx = fixture();
    let mask = &fx["mask"];
    let logits = fx["logits"].copy().set_requires_grad(true);
    let lp = token_logprobs(&logits, &fx["targets"]);
    let out = ppo_loss(&lp, &fx["behaviour_logp"], &fx["adv_with_expert_g09"], mask, 0.2);
    out.loss.backward();
    close("ppo loss", &out.loss, &fx["ppo_loss"]);
    close("ppo grad", &logits.grad(), &fx["ppo_grad_logits"]);
    close("clip fraction", &Tensor::from(out.clip_fraction), &fx["ppo_clip_fraction"]);
    assert!(out.clip_fraction > 0.0, "the fixture must exercise clipping");
    close("approx kl", &Tensor::from(out.approx_kl), &fx["ppo_approx_kl"]);

    let logits = fx["logits"].copy().set_requires_grad(true);
    let kl = kl_penalty(&token_logprobs(&logits, &fx["targets"]), &fx["ref_logp"], mask);
    kl.backward();
    close("kl loss", &kl, &fx["kl_loss"]);
    close("kl grad", &logits.grad(), &fx["kl_grad_logits"]);

    let logits = fx["logits"].copy().set_requires_grad(true);
    let sft = sft_loss(&logits, &fx["targets"], mask);
    sft.backward();
    close("sft loss", &sft, &fx["sft_loss"]);
    close("sft grad", &logits.grad(), &fx["sft_grad_logits"]);

    close("entropy", &token_entropy(&fx["logits"], mask), &fx["entropy"]);
}
