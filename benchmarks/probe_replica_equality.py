"""Probe for the replica engine: are R stacked runs bitwise equal to the same runs trained alone?

    .venv/bin/python benchmarks/probe_replica_equality.py [--device cpu|cuda] [--steps 5] [--replicas 4]

R runs of one architecture (init seeds 0..R-1, their own learning rates) take ``--steps`` SGD
(momentum 0.9) or fused-Adam steps on their own batches (device data, translate2, real MNIST
digits). Reference: each model alone (``torch.optim``, as ``experiments/train.py`` does). Variants:

* ``vmap``: ``torch.func.stack_module_state`` + ``vmap(grad(functional_call))``;
* ``bmm``: the stack as explicit (R, out, in) weights, ``torch.baddbmm`` per layer, autograd on the
  sum of the R mean losses (each replica's gradient comes from its own loss only);
* ``bmm, exact backward``: as ``bmm``, but a custom autograd function computes the weight and
  input gradients with one ``mm`` per replica, the products ``F.linear``'s backward computes alone.

Updates, for each variant: ``per-replica optimiser`` = one ``torch.optim`` instance per replica over
views of the stacked tensors (the same code path as alone), or ``stacked`` = one update of the
stacked tensors with the learning rates broadcast (R, 1, 1), as ``addcmul_`` or as ``sub_(lr * buf)``
(SGD only). Prints a Markdown table: gradients
of step 1 and weights after the last step, bitwise equal or the largest absolute difference.
"""
from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--replicas", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=128)
    args = ap.parse_args(argv)

    import tempfile

    import torch
    import torch.nn.functional as F
    from torch.func import functional_call, grad, stack_module_state, vmap

    from beton_builders import embedded
    from experiments.models import build_model
    from experiments.training import set_deterministic
    from lmc import seeds
    from pipelines import make_replica_loader

    set_deterministic()
    dev = torch.device(args.device)
    r_count = args.replicas
    lrs = [0.1 / (2 ** r) for r in range(r_count)]
    with tempfile.TemporaryDirectory() as tmp:
        beton = embedded.build(Path(tmp), splits=("train",), progress=False)["train"]
        data = make_replica_loader(beton, batch_size=args.batch_size, replicas=[(r, r) for r in range(r_count)],
                                   augment="translate2", device=dev)
        batches = [(x.flatten(2), y) for (x, y, _), _ in zip(data.iter_epoch(0), range(args.steps))]

    class StackedLinear(torch.autograd.Function):
        """(R, B, in) x (R, out, in) + (R, out): forward as baddbmm (equal to addmm per replica);
        backward with the products addmm's backward computes, one replica at a time."""

        @staticmethod
        def forward(ctx, h, weight, bias):
            ctx.save_for_backward(h, weight)
            return torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2))

        @staticmethod
        def backward(ctx, g):
            h, weight = ctx.saved_tensors
            grad_h = torch.stack([g[r].mm(weight[r]) for r in range(len(g))])
            grad_w = torch.stack([g[r].t().mm(h[r]) for r in range(len(g))])
            return grad_h, grad_w, g.sum(1)

    def models(name):
        out = []
        for r in range(r_count):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seeds.init_seed_for_torch(r))
                out.append(build_model(name, (1, 28, 28), 10, depth=2, width=512).to(dev))
        return out

    def optimiser(kind, params, lr):
        if kind == "sgd":
            return torch.optim.SGD(params, lr=lr, momentum=0.9)
        return torch.optim.Adam(params, lr=lr * 0.05, fused=True)

    def alone(name, kind):
        grads, finals = [], []
        for r, model in enumerate(models(name)):
            opt = optimiser(kind, model.parameters(), lrs[r])
            for step, (x, y) in enumerate(batches):
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(x[r]), y[r]).backward()
                if step == 0:
                    grads.append([p.grad.clone() for p in model.parameters()])
                opt.step()
            finals.append([p.detach().clone() for p in model.parameters()])
        return [torch.stack(g) for g in zip(*grads)], [torch.stack(f) for f in zip(*finals)]

    def stacked(name, kind, variant, update):
        ms = models(name)
        params, _ = stack_module_state(ms)
        names = list(params)
        flat = [params[k].detach().clone() for k in names]  # (R, ...) each, in parameters() order
        base = ms[0].to("meta")
        slope = 0.0 if name == "mlp" else None

        def grads_vmap(x, y):
            def loss(p, xb, yb):
                return F.cross_entropy(functional_call(base, p, (xb.view(-1, 1, 28, 28),)), yb)
            g = vmap(grad(loss))(dict(zip(names, flat)), x, y)
            return [g[k] for k in names]

        def grads_bmm(x, y, exact):
            ps = [p.requires_grad_(True) for p in flat]
            h = x
            for i in range(0, len(ps), 2):
                if exact:
                    h = StackedLinear.apply(h, ps[i], ps[i + 1])
                else:
                    h = torch.baddbmm(ps[i + 1].unsqueeze(1), h, ps[i].transpose(1, 2))
                if i + 2 < len(ps) and slope is not None:
                    h = F.relu(h)
            losses = F.cross_entropy(h.reshape(-1, h.shape[-1]), y.reshape(-1), reduction="none")
            losses.view(r_count, -1).mean(1).sum().backward()
            out = [p.grad for p in ps]
            for p in ps:
                p.grad = None
                p.requires_grad_(False)
            return out

        views = [[t[r] for t in flat] for r in range(r_count)]
        opts = [optimiser(kind, v, lrs[r]) for r, v in enumerate(views)] if update == "per-replica optimiser" else None
        momentum = [torch.zeros_like(t) for t in flat]
        lr_col = torch.tensor(lrs, device=dev)
        first = None
        for step, (x, y) in enumerate(batches):
            g = grads_vmap(x, y) if variant == "vmap" else grads_bmm(x, y, exact=variant != "bmm")
            first = first or [t.clone() for t in g]
            with torch.no_grad():
                if opts is not None:
                    for r, opt in enumerate(opts):
                        for p, gt in zip(views[r], g):
                            p.grad = gt[r]
                        opt.step()
                else:  # SGD only: torch's first step sets the buffer to the gradient
                    for t, gt, buf in zip(flat, g, momentum):
                        buf.copy_(gt) if step == 0 else buf.mul_(0.9).add_(gt)
                        lr = lr_col.view(-1, *[1] * (t.dim() - 1))
                        if update == "stacked, addcmul_(buf, -lr)":
                            t.addcmul_(buf, -lr)  # one rounding, as add_(buf, alpha=-lr) alone
                        else:
                            t.sub_(lr * buf)
        return first, flat

    def compare(a, b) -> str:
        worst = max(float((x - y).abs().max()) for x, y in zip(a, b))
        return "bitwise" if all(torch.equal(x, y) for x, y in zip(a, b)) else f"max |diff| {worst:.1e}"

    rows = []
    for name in ("mlp", "linear"):
        for kind in ("sgd", "adam"):
            ref_grads, ref_final = alone(name, kind)
            for variant in ("vmap", "bmm", "bmm, exact backward"):
                for update in ("per-replica optimiser", "stacked, addcmul_(buf, -lr)", "stacked, sub_(lr * buf)"):
                    if update != "per-replica optimiser" and kind == "adam":
                        continue
                    g, final = stacked(name, kind, variant, update)
                    rows.append((name, kind, variant, update, compare(g, ref_grads), compare(final, ref_final)))

    print(f"machine: {platform.processor() or platform.machine()}, device {dev}"
          + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else "")
          + f"; torch {torch.__version__}, threads {torch.get_num_threads()}; deterministic algorithms on\n"
          f"models: 784-512-10 (mlp = ReLU, linear = none), R={r_count}, batch {args.batch_size}, "
          f"{args.steps} steps, lr {lrs} (Adam x0.05)\n")
    print("| model | optimiser | stacking | update | step-1 gradients vs alone | weights after last step |\n"
          "|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
