#!/usr/bin/env python3
"""Independent PyTorch reference for airlift's AIRL losses (design §1); writes
tests/fixtures/airl/losses.safetensors, which worker/tests/airl_losses.rs compares against.

Written from the design text, with explicit per-sequence / per-group / per-token loops, not from
the Rust code. Needs only torch:   .venv/bin/python scripts/make_airl_fixtures.py

Batch: 6 sequences of up to 7 response tokens (lengths 7, 5, 3, 6, 7, 2), two groups (rows 0-2,
rows 3-5); rows 0 and 3 are experts (label 1), the others negatives (label 0). Vocabulary 11.
"""
import math
import os

import torch
from safetensors.torch import save_file

torch.manual_seed(0)
N, T, V = 6, 7, 11
lengths = [7, 5, 3, 6, 7, 2]
groups = [0, 0, 0, 1, 1, 1]
labels = torch.tensor([1.0, 0, 0, 1, 0, 0])
mask = torch.zeros(N, T)
for i, n in enumerate(lengths):
    mask[i, :n] = 1.0

f = torch.randn(N, T) * 2.0
policy_logp = -torch.rand(N, T) * 4.0
logits = torch.randn(N, T, V) * 1.5
targets = torch.randint(0, V, (N, T))
ref_logits = logits + torch.randn(N, T, V) * 0.5


def disc_loss(f, form, smoothing, balance):
    total, wsum = 0.0, 0.0
    n_pos = float(labels.sum())
    n_neg = float(N - n_pos)
    for i in range(N):
        n = lengths[i]
        d = f[i, :n] - (policy_logp[i, :n] if form == "airl" else 0.0)
        y = 1.0 - smoothing / 2 if labels[i] == 1 else smoothing / 2
        seq = torch.nn.functional.binary_cross_entropy_with_logits(d, torch.full((n,), y), reduction="mean")
        w = (1.0 / (2 * n_pos) if labels[i] == 1 else 1.0 / (2 * n_neg)) if balance else 1.0
        total = total + w * seq
        wsum += w
    return total / wsum


out = {}
for name, form, sm, bal in [("disc_airl", "airl", 0.1, True), ("disc_logit", "logit", 0.1, True),
                            ("disc_logit_plain", "logit", 0.0, False)]:
    fv = f.clone().requires_grad_(True)
    loss = disc_loss(fv, form, sm, bal)
    loss.backward()
    out[name + "_loss"] = loss.detach().reshape(1)
    out[name + "_grad_f"] = fv.grad.clone()

# Rewards: logit D of the airl form, temperature 2, clip 3; zero on padding.
rewards = torch.zeros(N, T)
for i in range(N):
    for t in range(lengths[i]):
        r = (f[i, t] - policy_logp[i, t]) / 2.0
        rewards[i, t] = max(-3.0, min(3.0, float(r)))
out["rewards"] = rewards


def advantages(rows, gamma):
    """rows: indices (into the batch) that form the groups and their statistics."""
    adv = torch.zeros(len(rows), T)
    for g in sorted(set(groups[i] for i in rows)):
        members = [k for k, i in enumerate(rows) if groups[i] == g]
        vals = torch.cat([rewards[rows[k], :lengths[rows[k]]] for k in members])
        mu, sd = vals.mean(), vals.std(unbiased=False)
        for k in members:
            i = rows[k]
            z = [(float(rewards[i, t]) - float(mu)) / (float(sd) + 1e-6) for t in range(lengths[i])]
            acc = 0.0
            for t in reversed(range(lengths[i])):
                acc = z[t] + gamma * acc
                adv[k, t] = acc
    return adv


all_rows = list(range(N))
policy_rows = [i for i in range(N) if labels[i] == 0]
out["adv_with_expert_g0"] = advantages(all_rows, 0.0)
out["adv_with_expert_g09"] = advantages(all_rows, 0.9)
out["adv_policy_only_g0"] = advantages(policy_rows, 0.0)
out["adv_policy_only_g09"] = advantages(policy_rows, 0.9)

# PPO on all rows with the γ = 0.9 advantages; behaviour log-probs perturbed enough that the
# clipped branch is active on some tokens.
adv = out["adv_with_expert_g09"]
with torch.no_grad():
    lp0 = torch.log_softmax(logits, -1).gather(2, targets.unsqueeze(2)).squeeze(2)
behaviour = lp0 + torch.randn(N, T) * 0.4
ref_lp = torch.log_softmax(ref_logits, -1).gather(2, targets.unsqueeze(2)).squeeze(2)

lg = logits.clone().requires_grad_(True)
lp = torch.log_softmax(lg, -1).gather(2, targets.unsqueeze(2)).squeeze(2)
terms, clipped, kls, count = [], 0, [], 0
for i in range(N):
    for t in range(lengths[i]):
        ratio = torch.exp(lp[i, t] - behaviour[i, t])
        a = adv[i, t]
        unclipped = -a * ratio
        clip_term = -a * torch.clamp(ratio, 0.8, 1.2)
        terms.append(torch.maximum(unclipped, clip_term))
        clipped += int(clip_term.item() > unclipped.item())
        r = ratio.item()
        kls.append((r - 1) - math.log(r))
        count += 1
ppo = torch.stack(terms).mean()
ppo.backward()
out["ppo_loss"] = ppo.detach().reshape(1)
out["ppo_grad_logits"] = lg.grad.clone()
out["ppo_clip_fraction"] = torch.tensor([clipped / count])
out["ppo_approx_kl"] = torch.tensor([sum(kls) / count])

lg = logits.clone().requires_grad_(True)
lp = torch.log_softmax(lg, -1).gather(2, targets.unsqueeze(2)).squeeze(2)
kl_terms = []
for i in range(N):
    for t in range(lengths[i]):
        d = ref_lp[i, t] - lp[i, t]
        kl_terms.append(torch.exp(d) - d - 1)
kl = torch.stack(kl_terms).mean()
kl.backward()
out["kl_loss"] = kl.detach().reshape(1)
out["kl_grad_logits"] = lg.grad.clone()

lg = logits.clone().requires_grad_(True)
nll = []
for i in range(N):
    nll.append(torch.nn.functional.cross_entropy(lg[i, :lengths[i]], targets[i, :lengths[i]], reduction="none"))
sft = torch.cat(nll).mean()
sft.backward()
out["sft_loss"] = sft.detach().reshape(1)
out["sft_grad_logits"] = lg.grad.clone()

ent = []
for i in range(N):
    p = torch.softmax(logits[i, :lengths[i]], -1)
    ent.append(-(p * torch.log(p)).sum(-1))
out["entropy"] = torch.cat(ent).mean().reshape(1)

inputs = {"f": f, "policy_logp": policy_logp, "logits": logits, "targets": targets, "ref_logp": ref_lp,
          "behaviour_logp": behaviour, "mask": mask, "labels": labels,
          "groups": torch.tensor(groups), "lengths": torch.tensor(lengths)}
path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "fixtures", "airl")
os.makedirs(path, exist_ok=True)
save_file({k: v.contiguous() for k, v in {**inputs, **out}.items()}, os.path.join(path, "losses.safetensors"))
print("clip fraction", out["ppo_clip_fraction"].item(), "ppo", out["ppo_loss"].item())
print("wrote", os.path.join(path, "losses.safetensors"))
