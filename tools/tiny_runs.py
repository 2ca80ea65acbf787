"""Two tiny Fashion-MNIST experiments for notebooks 04 and 05, run once; results go to nbs/images/.

  python tools/tiny_runs.py blocks   # the four designs of Fig. 5: losses, adaLN-Zero's gates, block updates
  python tools/tiny_runs.py patch    # patch size p=4 vs p=2 at equal steps: losses and a sample grid

Both train DiTs of width 64 and depth 4 on 28x28 Fashion-MNIST with AdamW (lr 1e-3, 50 warm-up steps),
batch 32, 300 steps, on one CPU thread (seed 0, deterministic). On a shared 2-core machine 'blocks' took
about 9 minutes and 'patch' about 12 (p=2 costs 4x p=4).
"""
import argparse, json, sys, time
from pathlib import Path
import torch
from dit_edu.data import FashionMNIST
from dit_edu.diffusion import create_diffusion
from dit_edu.model import DiT, model_gflops
from dit_edu.blocks import BLOCKS

OUT = Path(__file__).resolve().parent.parent / 'nbs' / 'images'
TINY = dict(input_size=28, in_channels=1, hidden_size=64, depth=4, num_heads=4, num_classes=10,
            learn_sigma=True)


def eval_batch(n=256, seed=1):
    """A fixed held-out batch: test images, timesteps spread over [0, 1000), noise."""
    test = FashionMNIST(train=False, image_size=28)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(test), generator=g)[:n]
    x, y = test._convert(test.images[idx]), test.labels[idx]
    t = torch.linspace(0, 999, n).long()
    return x, y, t, torch.randn(x.shape, generator=g)


@torch.no_grad()
def eval_loss(model, diffusion, batch):
    """Mean eps-MSE of the model on the fixed batch, in eval mode (no label dropout)."""
    x, y, t, noise = batch
    model.eval()
    mse = diffusion.training_losses(model, x, t, dict(y=y), noise=noise)['mse'].mean().item()
    model.train()
    return mse


@torch.no_grad()
def block_stats(model, batch):
    """Per block: mean |alpha| of both gates (adaLN-Zero only), relative update |block(x) - x| / |x|."""
    x, y, t, _ = batch
    model.eval()
    h = model.x_embedder(x[:64]) + model.pos_embed                       # (n, T, D)
    te, ye = model.t_embedder(t[:64]), model.y_embedder(y[:64], False)
    c = te + ye
    T = h.shape[1]
    h, cond = model.blocks[0].prepare(h, c, te, ye)
    gates, updates = [], []
    for blk in model.blocks:
        if model.block_design == 'adaLN-Zero':
            mod = blk.adaLN_modulation(c).chunk(6, dim=1)                # shift, scale, gate for msa then mlp
            gates.append([mod[2].abs().mean().item(), mod[5].abs().mean().item()])
        out = blk(h, cond)
        updates.append(((out - h)[:, :T].norm() / h[:, :T].norm()).item())
        h = out
    model.train()
    return gates, updates


def train(block='adaLN-Zero', patch_size=4, steps=300, log_every=25, batch_size=32, seed=0):
    """Train one tiny DiT; return its log (steps, train and eval losses, gates, block updates, seconds)."""
    torch.manual_seed(seed)
    data = FashionMNIST(train=True, image_size=28)
    model = DiT(patch_size=patch_size, block=block, **TINY).train()      # its own label dropout (0.1)
    diffusion = create_diffusion("")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50))
    batch = eval_batch()
    g = torch.Generator().manual_seed(seed)
    log = dict(block=block, patch_size=patch_size, gflops=model_gflops(model),
               params=sum(p.numel() for p in model.parameters()),
               step=[], train_loss=[], eval_mse=[], gates=[], updates=[])
    run, t0 = [], time.time()
    for step in range(steps + 1):
        if step % log_every == 0:
            gates, updates = block_stats(model, batch)
            log['step'].append(step); log['eval_mse'].append(eval_loss(model, diffusion, batch))
            log['train_loss'].append(sum(run) / len(run) if run else None); run = []
            log['gates'].append(gates); log['updates'].append(updates)
            print(f"{block} p={patch_size} step {step}: eval mse {log['eval_mse'][-1]:.4f}", file=sys.stderr)
        if step == steps: break
        idx = torch.randint(0, len(data), (batch_size,), generator=g)
        x, y = data._convert(data.images[idx]), data.labels[idx]
        t = torch.randint(0, diffusion.num_timesteps, (batch_size,), generator=g)
        loss = diffusion.training_losses(model, x, t, dict(y=y))['loss'].mean()
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step(); sched.step()
        run.append(loss.item())
    log['seconds'] = round(time.time() - t0, 1)
    return model, log


def blocks(args):
    logs = [train(block=b, steps=args.steps)[1] for b in BLOCKS]
    result = dict(config=TINY, steps=args.steps, runs=logs)
    (OUT / 'block_designs.json').write_text(json.dumps(result, indent=1))


def patch(args):
    from dit_edu.data import save_grid
    from dit_edu.sample import generate
    logs, grids = [], []
    labels = list(range(10)) * 2
    for p in (4, 2):
        model, log = train(patch_size=p, steps=args.steps)
        logs.append(log)
        grid = generate(model, labels, cfg_scale=4.0, steps=50, sampler='ddpm', seed=0)   # (20, 1, 28, 28)
        grids.append(grid)
    save_grid(torch.cat(grids), OUT / 'patch_size_samples.png', nrow=10)
    result = dict(config=TINY, steps=args.steps, labels=labels, rows='p=4: rows 1-2, p=2: rows 3-4',
                  runs=logs)
    (OUT / 'patch_size.json').write_text(json.dumps(result, indent=1))


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('what', choices=['blocks', 'patch'])
    ap.add_argument('--steps', type=int, default=300)
    a = ap.parse_args()
    if a.steps < 1: ap.error('--steps must be >= 1')
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    dict(blocks=blocks, patch=patch)[a.what](a)
