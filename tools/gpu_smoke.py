#!/usr/bin/env python3
"""The CUDA paths of dit-train and dit-sample's generate, on synthetic latents (no dataset, no VAE, no downloads).

Usage (repo root, on the GPU machine): python3 tools/gpu_smoke.py OUT_DIR [MODEL] [DEVICE]
Trains MODEL (default DiT-B/4) for 40 steps through `dit_edu.train.train` with its CUDA defaults (bf16, the compiled
fast loss, the timed attention choice, fused AdamW), then samples 8 latents with `generate(..., sampler='ddpm')` in bf16
through the compiled GuidedSampler and in fp32 without compilation from the same noise (the trained weights, not the EMA, which is still near the zero-output initialisation), and writes OUT_DIR/smoke.json.
"""
import json, math, sys, tempfile, time
from pathlib import Path
import numpy as np
import torch

out = Path(sys.argv[1] if len(sys.argv) > 1 else 'smoke_out'); out.mkdir(parents=True, exist_ok=True)
model_name = sys.argv[2] if len(sys.argv) > 2 else 'DiT-B/4'
device = sys.argv[3] if len(sys.argv) > 3 else ('cuda' if torch.cuda.is_available() else 'cpu')
from dit_edu.train import train
from dit_edu.runs import read_checkpoint
from dit_edu.sample import generate

work = Path(tempfile.mkdtemp())
n, classes = 512, 10
g = np.random.default_rng(0)
(work/'lat').mkdir()
np.save(work/'lat'/'latents.npy', g.standard_normal((n, 2, 4, 32, 32)).astype(np.float16))   # (N, [plain, mirrored], 4, 32, 32)
np.save(work/'lat'/'labels.npy', g.integers(0, classes, n))
(work/'lat'/'meta.json').write_text(json.dumps(dict(n=n, shape=[4, 32, 32], scale=0.18215, num_classes=classes)))
res = dict(device=torch.cuda.get_device_name() if device == 'cuda' else 'cpu', torch=torch.__version__, model=model_name)
t0 = time.time()
steps = 40 if device == 'cuda' else 4
run = train(['--data-path', str(work/'lat'), '--model', model_name, '--image-size', '256', '--num-classes', str(classes),
             '--global-batch-size', '64' if device == 'cuda' else '4', '--max-steps', str(steps), '--log-every', str(steps // 4),
             '--ckpt-every', str(steps), '--sample-every', '0', '--num-workers', '2', '--results-dir', str(work/'results'),
             '--device', device, '--compile', '--no-progress'])
rows = [json.loads(l) for l in (run.exp_dir/'metrics.jsonl').read_text().splitlines()]
res['train'] = dict(seconds=time.time() - t0, precision=run.args.precision, compile=run.args.compile, attention=run.args.attention,
                    fused_adamw=bool(run.opt.defaults.get('fused')), losses=[r['loss'] for r in rows],
                    images_per_s_last=rows[-1]['images_per_sec'], steps=run.step,
                    checkpoint_ok=read_checkpoint(run.exp_dir/'checkpoints'/f'{steps:07d}.pt')['step'] == steps,
                    finite=all(math.isfinite(r['loss']) for r in rows))
ema, labels = run.model_raw.eval(), list(range(8))   # the trained weights: the EMA (decay 0.9999) is still the zero-output init
t0 = time.time()
torch.manual_seed(1); fast = generate(ema, labels, 4.0, 50, 'ddpm', seed=3, precision='bf16', compile=True)
res['sample_fast_s'] = time.time() - t0
torch.manual_seed(1); ref = generate(ema, labels, 4.0, 50, 'ddpm', seed=3, precision='fp32', compile=False)
res['sample'] = dict(shape=list(fast.shape), bf16_compiled_vs_fp32_rel_l2=((fast - ref).norm() / ref.norm()).item(),
                     fp32_rms=ref.pow(2).mean().sqrt().item(), finite=bool(torch.isfinite(fast).all()))
torch.manual_seed(1); dpm = generate(ema, labels, 4.0, 20, 'dpm++2m', seed=3, precision='bf16', compile=True)
torch.manual_seed(1); dpm32 = generate(ema, labels, 4.0, 20, 'dpm++2m', seed=3)
res['sample_dpm'] = dict(bf16_compiled_vs_fp32_rel_l2=((dpm - dpm32).norm() / dpm32.norm()).item())
ok = res['train']['finite'] and res['train']['checkpoint_ok'] and res['sample']['finite'] and res['sample']['bf16_compiled_vs_fp32_rel_l2'] < 0.1
res['ok'] = ok
(out/'smoke.json').write_text(json.dumps(res, indent=1))
print(json.dumps(res, indent=1))
sys.exit(0 if ok else 1)
