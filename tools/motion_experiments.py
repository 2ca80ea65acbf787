"""The video motion study of 31_video_train ("Why the items do not move yet"): recipes that change one thing
in the default video run, and the score of a checkpoint as recorded in nbs/video_results/motion.json.

  python tools/motion_experiments.py train RECIPE [dit-train arguments]   # e.g. --init-lr-scale 1
  python tools/motion_experiments.py score RECIPE [OPTIONS] CKPT [CKPT ...]   # 20 clips, 2 per class
(`score plain CKPT` is `dit-sample --ckpt CKPT --eval 2`; the other recipes patch the model or sampler first)
OPTIONS of score: --n-per-class N (default 2), --cfg S (default 4), --guidance-below T (guide only the steps
at t < T, a guidance interval; default: every step). CKPT 'image' is the shipped image DiT as a one-frame
video model on the default canvas (the untrained start of `frames`). score also prints place_std_px: how far
the clips' average places spread across clips (per axis, averaged): for one-frame models, where items go.

RECIPE is one of:
  plain       dit-train unchanged
  hight       training timesteps drawn as T * u**(1/3): high noise levels more often
  snr-weight  the MSE term of each sample weighted by clamp(1/SNR(t), 1, 50): x0-like weight at high noise
  window      temporal blocks attend across frames over a 3x3 window of places (masked space-time
              attention), not at one place only; still zero-gated, so the model starts as the image DiT
  mixed-noise the noise of training and the sampler's starting noise share one draw across a clip's frames
              (PYoCo's mixed noise, alpha = 1: a correlation of 0.5 between frames)
  frames      train only: the temporal blocks frozen at their zero-gated start, for --num-frames 1 (an image
              DiT fine-tuned on single frames, items anywhere); its ema.safetensors can be --init-from
A study tool, not part of the package: it patches dit_edu at run time (window changes the model, so a
window or mixed-noise checkpoint must be scored with its recipe too)."""
import json, sys
import torch, torch.nn.functional as F
from einops import rearrange
import dit_edu.attention as A, dit_edu.train as tr, dit_edu.video as V
from dit_edu.video_train import VIDEO_DEFAULTS, VideoTrainer, evaluate_video_model, item_centres

RECIPES = ('plain', 'hight', 'snr-weight', 'window', 'mixed-noise', 'frames')

def hight(trainer):
    "Draw t as T * u**(1/3) instead of uniformly (the density grows as t squared)."
    plain = trainer.next_batch
    def next_batch(x, y):
        x, y, t, noise = plain(x, y)
        T = trainer.diffusion.num_timesteps
        t = ((t.double() + 0.5) / T).pow(1 / 3).mul(T).floor().clamp(max=T - 1).long()
        return x, y, t, noise
    trainer.next_batch = next_batch

def snr_weight(trainer, w_max=50.0):
    "Weight each sample's MSE by clamp(1/SNR(t), 1, w_max); the learned-variance term as it was."
    d = trainer.diffusion
    ab = torch.as_tensor(d.alphas_cumprod, dtype=torch.float32)
    w = ((1 - ab) / ab).clamp(1, w_max)
    plain = d.training_losses
    def training_losses(model, x, t, model_kwargs=None, noise=None):
        out = plain(model, x, t, model_kwargs, noise)
        out['loss'] = out['mse'] * w.to(t.device)[t] + out['vb']
        return out
    d.training_losses = training_losses

def window_mask(grid, frames, r, device):
    "(F*T, F*T) True where two tokens' places are at most r cells apart on each axis (any frames)."
    row, col = torch.arange(grid).repeat_interleave(grid), torch.arange(grid).repeat(grid)
    near = ((row[:, None] - row[None]).abs() <= r) & ((col[:, None] - col[None]).abs() <= r)   # (T, T)
    return near.repeat(frames, frames).to(device)

def use_window(r=1):
    "Patch VideoDiT so that each temporal block attends over all frames and the places within r cells."
    def attention(self, x):
        q, k, v = self.split_heads(x)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=getattr(self, 'mask', None))
        return self.proj(rearrange(o, 'n h t d -> n t (h d)'))
    def space_time(self, spatial, temporal, N, x, c_frame, c_place):
        Fr, T = x.shape[0] // N, x.shape[1]
        when = self.temp_embed[:, :Fr, None].to(x.dtype)                             # (1, F, 1, D)
        x = rearrange(spatial(x, c_frame), '(n f) t d -> n f t d', n=N) + when
        m = getattr(temporal.attn, 'mask', None)
        if m is None or m.shape[0] != Fr * T:
            temporal.attn.mask = window_mask(int(T ** 0.5), Fr, r, x.device)
        x = temporal(x.flatten(1, 2), c_frame[::Fr]).view(N, Fr, T, -1) - when        # one c per clip
        return rearrange(x, 'n f t d -> (n f) t d')
    A.Attention.forward, V.VideoDiT.space_time = attention, space_time

def mix_frames(noise, shared, alpha=1.0):
    "Noise (N, C, F, H, W) with a per-clip draw `shared` (N, C, 1, H, W) mixed in: unit variance per element."
    return (alpha * shared + noise) / (1 + alpha ** 2) ** 0.5

def mixed_noise_training(trainer):
    "Train on mixed noise: the step's own noise plus one draw per clip shared by its frames."
    plain = trainer.next_batch
    def next_batch(x, y):
        x, y, t, noise = plain(x, y)
        g = torch.Generator().manual_seed(10_000_019 + trainer.step)         # a function of the step
        shared = torch.randn(noise.shape[:2] + (1,) + noise.shape[3:], generator=g).to(noise.device)
        return x, y, t, mix_frames(noise, shared)
    trainer.next_batch = next_batch

def mixed_noise_sampling(seed=0):
    "Make every Sampler start a clip from mixed noise (its shared draw from `seed`)."
    from dit_edu.sampling import Sampler
    plain = Sampler.sample
    def sample(self, model, shape, noise=None, model_kwargs=None, device=None, progress=False):
        g = torch.Generator().manual_seed(seed)
        shared = torch.randn(tuple(shape[:2]) + (1,) + tuple(shape[3:]), generator=g).to(noise.device)
        return plain(self, model, shape, mix_frames(noise, shared), model_kwargs, device, progress)
    Sampler.sample = sample

def freeze_temporal():
    "Make dit-train's video model keep its temporal blocks as built (zero-gated: the identity)."
    import dit_edu.video_train as vt
    plain = vt.build_video_model
    def build(args):
        model, copied = plain(args)
        for name, w in model.named_parameters():
            if name.startswith('temporal_blocks.'): w.requires_grad_(False)
        return model, copied
    vt.build_video_model = build

def guidance_below(t_hi):
    "Guide only the sampler steps at t < t_hi (Kynkaanniemi et al.'s guidance interval); 1 elsewhere."
    from dit_edu.sampling import ClassifierFreeGuidance
    plain = ClassifierFreeGuidance.__call__
    def call(self, x, t, y):
        s = self.cfg_scale
        self.cfg_scale = torch.where(t < t_hi, s, 1.0).float().view(-1, *[1] * (x.ndim - 1))   # per sample
        try: return plain(self, x, t, y)
        finally: self.cfg_scale = s
    ClassifierFreeGuidance.__call__ = call

def score_model(ck):
    "The video model of checkpoint `ck`, or ('image') the shipped image DiT as a one-frame video model."
    if ck != 'image': return V.load_video(ck)
    from types import SimpleNamespace
    from dit_edu.video_train import build_video_model
    a = SimpleNamespace(**(VIDEO_DEFAULTS | dict(num_frames=1, global_seed=0, class_dropout_prob=0.1)))
    model = build_video_model(a)[0].eval()
    model.item_size = a.item_size
    return model

def score(recipe, rest):
    opts = dict(n_per_class=2, cfg=4.0, guidance_below=None)
    while rest and rest[0].startswith('--'):
        key = rest[0][2:].replace('-', '_')
        if key not in opts or len(rest) < 2:
            print(f"score: unknown option or missing value: {rest[0]}", file=sys.stderr); sys.exit(2)
        opts[key], rest = float(rest[1]), rest[2:]
    if opts['guidance_below'] is not None: guidance_below(opts['guidance_below'])
    torch.set_num_threads(1)
    for ck in rest:
        model = score_model(ck)                          # the crop: the item size the run trained on
        item = model.item_size or VIDEO_DEFAULTS['item_size']
        s, clips, _ = evaluate_video_model(model, n_per_class=int(opts['n_per_class']), cfg_scale=opts['cfg'],
                                           item_size=item)
        place = item_centres(clips)[0].mean(1).std(0).mean().item()          # (N, F, 2) -> per axis -> px
        s = {k: v for k, v in s.items() if k != 'per_class'}
        print(json.dumps(dict(ckpt=ck, recipe=recipe) | opts | s | dict(place_std_px=place)))

def main(argv):
    if len(argv) < 2 or argv[0] not in ('train', 'score') or argv[1] not in RECIPES:
        sys.exit(__doc__)
    what, recipe, rest = argv[0], argv[1], argv[2:]
    if recipe == 'window': use_window()
    if recipe == 'mixed-noise' and what == 'score': mixed_noise_sampling()
    if what == 'score':
        return score(recipe, rest)
    if recipe == 'frames': freeze_temporal()
    args = tr.resolve_args(tr.get_parser().parse_args(rest))
    trainer = VideoTrainer(args).setup(None, None)
    if recipe == 'hight': hight(trainer)
    if recipe == 'snr-weight': snr_weight(trainer)
    if recipe == 'mixed-noise': mixed_noise_training(trainer)
    trainer.fit()

if __name__ == '__main__':
    main(sys.argv[1:])
