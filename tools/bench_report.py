#!/usr/bin/env python3
"""Merge the JSON files of tools/gpu_bench.sh into one markdown table (+ the loss comparison and profile)."""
import json, sys
from pathlib import Path

out = Path(sys.argv[1] if len(sys.argv) > 1 else '.')
parts = {p.stem: json.loads(p.read_text()) for p in sorted(out.glob('*.json')) if p.stem not in ('summary', 'smoke')}
if not parts: sys.exit(f'no results in {out}')
if len(sys.argv) > 2: Path(sys.argv[2]).write_text(json.dumps(parts, indent=1))
env = next(iter(parts.values()))
print(f"Card: {env['device']}; torch {env['torch']}; {env['date']}.\n")
print('| part | task | mode | batch | images/s | MFU | peak GiB | bf16 matmul TFLOP/s | notes |')
print('|---|---|---|---|---|---|---|---|---|')
for name, rep in parts.items():
    for r in rep['results']:
        notes = [r['precision'], f"attention {r['attention']}", f"compile {r['compile']}" + (f" ({r['compile_mode']})" if r.get('compile_mode') else '')]
        if r['task'] == 'sample': notes.append(f"{r['sample_steps']} steps, cfg 4.0, timed {r['timed_steps']}")
        if r.get('micro', 1) > 1: notes.append(f"{r['micro']} micro-batches")
        if r.get('host_syncs_timed') is not None: notes.append(f"host syncs while timed: {r['host_syncs_timed']}")
        if r.get('bf16_vs_fp32_rel_l2') is not None: notes.append(f"bf16 vs fp32 samples rel L2 {r['bf16_vs_fp32_rel_l2']:.2e}")
        if r.get('warmup_s'): notes.append(f"warm-up (compile) {r['warmup_s']:.0f} s")
        if r.get('first_call_s'): notes.append(f"first call (compile) {r['first_call_s']:.0f} s")
        if r.get('compile_options'): notes.append(f"inductor {r['compile_options']}")
        peak = '-' if r.get('peak_gib') is None else f"{r['peak_gib']:.1f}"
        print(f"| {name} | {r['task']} | {r['mode']} | {r['batch']} | {r['images_per_s']:.2f} | {100 * r['mfu']:.1f}% | {peak} | "
              f"{rep['matmul_bf16_tflops']:.0f} | {'; '.join(notes)} |")
ref = parts.get('ref')
ref_train = next((r for r in ref['results'] if r['task'] == 'train'), None) if ref else None
for name, rep in parts.items():                       # every fast training part against the reference mode's losses
    r0 = rep['results'][0]
    if not ref_train or r0['task'] != 'train' or r0['mode'] != 'fast' or r0['batch'] != ref_train['batch']: continue
    a, b = r0['losses'], ref_train['losses']
    n = min(len(a), len(b))
    rel = [abs(x - y) / abs(y) for x, y in zip(a[:n], b[:n])]
    print(f"\nLoss tracking of {name} over {n} steps (same weights, data, t, noise; fast bf16 vs reference fp32):")
    print('fast:', ' '.join(f'{x:.4f}' for x in a[:n])); print('ref: ', ' '.join(f'{x:.4f}' for x in b[:n]))
    print(f'max relative difference {max(rel):.2e}, mean {sum(rel) / n:.2e}')
for name, rep in parts.items():
    prof = rep['results'][0].get('profile_ms_per_step')
    if prof:
        tot = sum(prof.values())
        print(f"\nProfile of {name} (device ms per step, total {tot:.1f}): " + ', '.join(f'{k} {v:.1f} ({100 * v / tot:.0f}%)' for k, v in sorted(prof.items(), key=lambda kv: -kv[1])))
