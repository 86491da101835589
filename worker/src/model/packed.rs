//! Prefix-tree packing: rows that share a prefix (the G samples of a prompt, an expert and its
//! corruptions, which equal it up to their first error) are computed once per shared token.
//!
//! The rows of one tree are merged into a trie; its nodes are laid out in insertion order (a
//! parent always comes before its children) as one batch row, each at the rotary position of its
//! depth, attending to its ancestors and itself only ("tree attention"). A causal LM's output at a
//! token depends only on the tokens before it, so every node's hidden state equals what each row
//! through it computes alone, and gradients reach the shared tokens once per row through the
//! gather back to the rows' layout. In the learner's batches the prompt is most of a row
//! (about 100 of 140 tokens in the embedded default), so this removes most of the work.

use std::collections::HashMap;
use tch::{Device, Tensor};

/// Trees packed as batch rows for [`super::llama::Llama::hidden_states_packed`].
pub struct Packed {
    /// [B, T] int64 token ids (padding: 0).
    pub ids: Tensor,
    /// [B, T] int64 rotary positions (each node's depth).
    pub positions: Tensor,
    /// [B, 1, T, T] bool: true where the query node may attend to the key node (its ancestors
    /// and itself; padding nodes see only themselves). `None` when every tree is a chain (no
    /// row shares a prefix with another that then differs): plain causal attention then computes
    /// the same, without a mask, so that SDPA can take its flash kernel.
    pub mask: Option<Tensor>,
    /// [rows × width] int64: for each input row and column, the flat index (b × T + node) of the
    /// node that holds it; columns past a row's end point at its last node.
    pub gather: Tensor,
    /// Input rows, in the order of the trees and of their rows.
    pub rows: i64,
    /// Columns of the rows' layout (at least the longest row).
    pub width: i64,
    /// Real nodes over all trees (the tokens the forward computes, padding aside).
    pub nodes: usize,
}

/// One trie: nodes in insertion order, and for each input row the node of each of its tokens.
struct Trie {
    tokens: Vec<u32>,
    parent: Vec<Option<usize>>,
    depth: Vec<usize>,
    paths: Vec<Vec<usize>>,
}

impl Trie {
    fn new(rows: &[&[u32]]) -> Self {
        let mut t = Trie {
            tokens: Vec::new(),
            parent: Vec::new(),
            depth: Vec::new(),
            paths: Vec::new(),
        };
        let mut child: HashMap<(Option<usize>, u32), usize> = HashMap::new();
        for row in rows {
            let mut at = None;
            let mut path = Vec::with_capacity(row.len());
            for (d, &tok) in row.iter().enumerate() {
                let next = *child.entry((at, tok)).or_insert_with(|| {
                    t.tokens.push(tok);
                    t.parent.push(at);
                    t.depth.push(d);
                    t.tokens.len() - 1
                });
                path.push(next);
                at = Some(next);
            }
            t.paths.push(path);
        }
        t
    }

    fn len(&self) -> usize {
        self.tokens.len()
    }
}

impl Packed {
    /// Packs `trees` (each a list of token rows; rows need not share anything, but the work
    /// saved is what they share) into one batch row per tree, for rows laid out `width` columns
    /// wide. Every row needs at least one token and at most `width`.
    pub fn new(trees: &[Vec<&[u32]>], width: usize, device: Device) -> Self {
        let tries: Vec<Trie> = trees.iter().map(|rows| Trie::new(rows)).collect();
        let b = tries.len().max(1);
        let t = tries.iter().map(Trie::len).max().unwrap_or(1).max(1);
        let mut ids = vec![0i64; b * t];
        let mut pos = vec![0i64; b * t];
        let mut mask = vec![false; b * t * t];
        let mut gather = Vec::new();
        for (bi, trie) in tries.iter().enumerate() {
            let m = &mut mask[bi * t * t..(bi + 1) * t * t];
            for n in 0..t {
                if n < trie.len() {
                    ids[bi * t + n] = trie.tokens[n] as i64;
                    pos[bi * t + n] = trie.depth[n] as i64;
                    if let Some(p) = trie.parent[n] {
                        // Ancestors of n = ancestors of its parent (an earlier row) and n.
                        let (done, rest) = m.split_at_mut(n * t);
                        rest[..p + 1].copy_from_slice(&done[p * t..p * t + p + 1]);
                    }
                }
                m[n * t + n] = true;
            }
            for path in &trie.paths {
                assert!(
                    !path.is_empty() && path.len() <= width,
                    "a packed row needs 1..={width} tokens, not {}",
                    path.len()
                );
                let last = *path.last().expect("non-empty");
                gather.extend((0..width).map(|c| (bi * t + path.get(c).copied().unwrap_or(last)) as i64));
            }
        }
        let rows = tries.iter().map(|x| x.paths.len()).sum::<usize>() as i64;
        let chains = tries.iter().all(|x| x.parent.iter().enumerate().all(|(n, p)| *p == n.checked_sub(1)));
        let (b, t) = (b as i64, t as i64);
        Packed {
            ids: Tensor::from_slice(&ids).view([b, t]).to_device(device),
            positions: Tensor::from_slice(&pos).view([b, t]).to_device(device),
            mask: (!chains).then(|| Tensor::from_slice(&mask).view([b, 1, t, t]).to_device(device)),
            gather: Tensor::from_slice(&gather).to_device(device),
            rows,
            width: width as i64,
            nodes: tries.iter().map(Trie::len).sum(),
        }
    }

    /// Per-node values [B, T, ...] back in the rows' layout [rows, width, ...].
    pub fn unpack(&self, packed: &Tensor) -> Tensor {
        let size = packed.size();
        let rest = &size[2..];
        let flat: Vec<i64> = [size[0] * size[1]].iter().chain(rest).copied().collect();
        let out: Vec<i64> = [self.rows, self.width].iter().chain(rest).copied().collect();
        packed.reshape(flat.as_slice()).index_select(0, &self.gather).reshape(out.as_slice())
    }
}

/// Groups row indices by equal prompts (in order of first appearance; with `share` false, every
/// row is a group of its own, so every tree is a chain), splits groups of more than `micro` rows, and packs the groups into micro-batches: whole groups while the packed
/// positions (trees × the longest tree's upper bound) stay within `micro × width`, at least one
/// group each. `prompts[i]` and `lens[i]` are row i's prompt and full length. Returns each
/// micro-batch as its trees, each tree as its rows.
pub fn micro_batches(prompts: &[&[u32]], lens: &[usize], micro: usize, width: usize, share: bool) -> Vec<Vec<Vec<usize>>> {
    let micro = micro.max(1);
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut by_prompt: HashMap<&[u32], usize> = HashMap::new();
    for (i, p) in prompts.iter().enumerate() {
        if !share {
            groups.push(vec![i]);
            continue;
        }
        let g = *by_prompt.entry(p).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].push(i);
    }
    // A tree holds at most its prompt once plus every row's remainder.
    let bound = |g: &[usize]| -> usize { prompts[g[0]].len() + g.iter().map(|&i| lens[i] - prompts[i].len()).sum::<usize>() };
    let budget = micro * width.max(1);
    let mut out: Vec<Vec<Vec<usize>>> = Vec::new();
    let (mut cur, mut longest): (Vec<Vec<usize>>, usize) = (Vec::new(), 0);
    for tree in groups.iter().flat_map(|g| g.chunks(micro)) {
        let size = bound(tree);
        if !cur.is_empty() && (cur.len() + 1) * longest.max(size) > budget {
            out.push(std::mem::take(&mut cur));
            longest = 0;
        }
        cur.push(tree.to_vec());
        longest = longest.max(size);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_prefixes_become_one_node_each() {
        let a: &[u32] = &[1, 2, 3, 4];
        let b: &[u32] = &[1, 2, 3, 5, 6];
        let c: &[u32] = &[1, 2, 7];
        let p = Packed::new(&[vec![a, b, c], vec![c]], 5, Device::Cpu);
        // Tree 0: 1 2 3 4 | 5 6 | 7 = 7 nodes; tree 1: 3 nodes.
        assert_eq!(p.nodes, 10);
        assert_eq!(p.ids.size(), [2, 7]);
        assert_eq!(Vec::<i64>::try_from(p.ids.get(0)).unwrap(), [1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(Vec::<i64>::try_from(p.positions.get(0)).unwrap(), [0, 1, 2, 3, 3, 4, 2]);
        // Node 5 (token 6) sees 1 2 3 5 6, not 4 or 7.
        let row5: Vec<bool> = Vec::<bool>::try_from(p.mask.as_ref().unwrap().get(0).get(0).get(5)).unwrap();
        assert_eq!(row5, [true, true, true, false, true, true, false]);
        // Padding nodes of tree 1 see only themselves.
        let row6: Vec<bool> = Vec::<bool>::try_from(p.mask.as_ref().unwrap().get(1).get(0).get(6)).unwrap();
        assert_eq!(row6, [false, false, false, false, false, false, true]);
        // Rows back: b's columns are nodes 0 1 2 4 5; c (row 2) ends at node 6, repeated after.
        let g = Vec::<i64>::try_from(&p.gather).unwrap();
        assert_eq!(&g[5..10], &[0, 1, 2, 4, 5]);
        assert_eq!(&g[10..15], &[0, 1, 6, 6, 6]);
        assert_eq!(&g[15..20], &[7, 8, 9, 9, 9]);
        let unpacked = p.unpack(&p.ids.unsqueeze(-1));
        assert_eq!(unpacked.size(), [4, 5, 1]);
        assert_eq!(Vec::<i64>::try_from(unpacked.get(1).squeeze_dim(-1)).unwrap(), [1, 2, 3, 5, 6]);
        // Chains only (each row alone, or rows equal up to one's end): no mask, causal.
        assert!(Packed::new(&[vec![a], vec![b], vec![c]], 5, Device::Cpu).mask.is_none());
        assert!(Packed::new(&[vec![c, &b[..2]]], 5, Device::Cpu).mask.is_none());
        assert!(Packed::new(&[vec![c, a]], 5, Device::Cpu).mask.is_some());
    }

    #[test]
    fn micro_batches_keep_prompt_groups_within_the_budget() {
        let (p1, p2, p3): (&[u32], &[u32], &[u32]) = (&[1; 10], &[2; 10], &[3; 10]);
        let prompts = [p1, p2, p1, p3, p2, p1];
        let lens = [14, 12, 13, 20, 12, 11];
        // Groups: p1 {0, 2, 5} bound 10+4+3+1 = 18; p2 {1, 4} 14; p3 {3} 20.
        assert_eq!(micro_batches(&prompts, &lens, 8, 20, true), vec![vec![vec![0, 2, 5], vec![1, 4], vec![3]]]);
        // micro 2: p1 splits into [0, 2] (17) and [5] (11); budget 2 × 20 = 40 holds two trees
        // of up to 20 (or three of up to 13).
        assert_eq!(
            micro_batches(&prompts, &lens, 2, 20, true),
            vec![vec![vec![0, 2], vec![5]], vec![vec![1, 4], vec![3]]]
        );
        // micro 1: every row its own tree, one tree per micro-batch when rows are long.
        let one = micro_batches(&prompts, &lens, 1, 20, true);
        assert!(one.iter().all(|m| m.iter().all(|t| t.len() == 1)));
        assert_eq!(one.iter().flatten().flatten().count(), 6);
        // Without sharing: every row its own tree, rows packed within the same budget.
        let alone = micro_batches(&prompts, &lens, 8, 20, false);
        assert_eq!(alone, vec![vec![vec![0], vec![1], vec![2], vec![3], vec![4], vec![5]]]);
    }

    /// The packed forward against the right-padded one (which the transformers fixtures check):
    /// every real position's hidden state, and the parameters' gradient of a loss over them.
    #[test]
    fn packed_forward_equals_the_padded_forward() {
        use crate::model::llama::{Llama, RawConfig};
        use tch::Kind;
        let raw: RawConfig = serde_json::from_value(serde_json::json!({
            "model_type": "llama", "vocab_size": 50, "hidden_size": 16, "intermediate_size": 32,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "tie_word_embeddings": true
        }))
        .unwrap();
        tch::manual_seed(3);
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let m = Llama::new(&vs.root(), &raw.into_config().unwrap());
        let rows: Vec<Vec<u32>> = vec![
            vec![1, 2, 3, 4, 5, 6],
            vec![1, 2, 3, 4, 7],
            vec![1, 2, 3, 8, 9, 10, 11, 12],
            vec![20, 21],
            vec![20, 21, 22, 23],
            vec![30, 31, 32],
        ];
        let width = rows.iter().map(Vec::len).max().unwrap();
        let (n, w) = (rows.len() as i64, width as i64);
        let mut ids = vec![0i64; rows.len() * width];
        let mut att = vec![0i64; rows.len() * width];
        for (r, row) in rows.iter().enumerate() {
            for (j, &t) in row.iter().enumerate() {
                ids[r * width + j] = t as i64;
                att[r * width + j] = 1;
            }
        }
        let ids = Tensor::from_slice(&ids).view([n, w]);
        let att = Tensor::from_slice(&att).view([n, w]);
        let real = att.to_kind(Kind::Float).unsqueeze(-1);
        let weight = Tensor::randn([n, w, 16], (Kind::Float, Device::Cpu));
        let grads = |h: &Tensor| -> Vec<Tensor> {
            for v in vs.trainable_variables() {
                v.grad().defined().then(|| v.grad().zero_());
            }
            (h * &weight * &real).sum(Kind::Float).backward();
            let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
            named.sort_by(|a, b| a.0.cmp(&b.0));
            named.into_iter().map(|(_, v)| v.grad().copy()).collect()
        };
        let want = m.hidden_states_right_padded(&ids, &att);
        let want_g = grads(&want);
        // Three trees: rows 0-2 share "1 2 3" (and 0-1 "1 2 3 4"), rows 3-4 share "20 21".
        let r: Vec<&[u32]> = rows.iter().map(Vec::as_slice).collect();
        let p = Packed::new(&[vec![r[0], r[1], r[2]], vec![r[3], r[4]], vec![r[5]]], width, Device::Cpu);
        assert_eq!(p.nodes, 12 + 4 + 3);
        let got = m.hidden_states_packed(&p);
        assert_eq!(got.size(), want.size());
        let err = ((&got - &want) * &real).abs().max().double_value(&[]);
        assert!(err < 1e-5, "hidden states differ by {err}");
        for (a, b) in grads(&got).iter().zip(&want_g) {
            let scale = b.abs().max().double_value(&[]).max(1e-6);
            let err = (a - b).abs().max().double_value(&[]) / scale;
            assert!(err < 1e-5, "gradients differ by {err} of their largest value");
        }
    }
}
