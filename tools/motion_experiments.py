"""The video motion study of 31_video_train ("Why the items do not move yet"): recipes that change one thing
in the default video run, and the score of a checkpoint as recorded in nbs/video_results/motion.json.

  python tools/motion_experiments.py train RECIPE [dit-train arguments]   # e.g. --init-lr-scale 1
  python tools/motion_experiments.py score RECIPE CKPT [CKPT ...]         # 20 clips, 2 per class
(`score plain CKPT` is `dit-sample --ckpt CKPT --eval 2`; the other recipes patch the model or sampler first)

RECIPE is one of:
  plain       dit-train unchanged
  hight       training timesteps drawn as T * u**(1/3): high noise levels more often
  snr-weight  the MSE term of each sample weighted by clamp(1/SNR(t), 1, 50): x0-like weight at high noise
  window      temporal blocks attend across frames over a 3x3 window of places (masked space-time
              attention), not at one place only; still zero-gated, so the model starts as the image DiT
  mixed-noise the noise of training and the sampler's starting noise share one draw across a clip's frames
              (PYoCo's mixed noise, alpha = 1: a correlation of 0.5 between frames)
A study tool, not part of the package: it patches dit_edu at run time (window changes the model, so a
window or mixed-noise checkpoint must be scored with its recipe too)."""
import json, sys
import torch, torch.nn.functional as F
from einops import rearrange
import dit_edu.attention as A, dit_edu.train as tr, dit_edu.video as V
from dit_edu.video_train import VIDEO_DEFAULTS, VideoTrainer, evaluate_video_model

RECIPES = ('plain', 'hight', 'snr-weight', 'window', 'mixed-noise')

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

def main(argv):
    if len(argv) < 2 or argv[0] not in ('train', 'score') or argv[1] not in RECIPES:
        sys.exit(__doc__)
    what, recipe, rest = argv[0], argv[1], argv[2:]
    if recipe == 'window': use_window()
    if recipe == 'mixed-noise' and what == 'score': mixed_noise_sampling()
    if what == 'score':
        torch.set_num_threads(1)
        for ck in rest:
            model = V.load_video(ck)                     # the crop: the item size the run trained on
            item = model.item_size or VIDEO_DEFAULTS['item_size']
            s = evaluate_video_model(model, n_per_class=2, item_size=item)[0]
            print(json.dumps(dict(ckpt=ck, recipe=recipe) | {k: v for k, v in s.items() if k != 'per_class'}))
        return
    args = tr.resolve_args(tr.get_parser().parse_args(rest))
    trainer = VideoTrainer(args).setup(None, None)
    if recipe == 'hight': hight(trainer)
    if recipe == 'snr-weight': snr_weight(trainer)
    if recipe == 'mixed-noise': mixed_noise_training(trainer)
    trainer.fit()

if __name__ == '__main__':
    main(sys.argv[1:])
