#!/usr/bin/env python3
"""PyTorch CPU reference for the workloads in SPECS.md (M1..M6).

Usage: python torch_ref.py M1 [--steps N] [--threads 2] [--seed 0] [--batch B]

forja's copy of shared/bench/torch_ref.py; the one change is --batch (default: the spec's).

One training step = forward + backward + optimizer update on one batch of random
data (generated once with a fixed seed, reused every step, so RNG cost is not timed).
5 warm-up steps, then N timed steps. Prints ONE JSON line on stdout; the parameter
count (and a per-module breakdown) goes to stderr.

Bias convention: a conv / linear layer that is directly followed by BatchNorm has
no bias (bias=False); every other conv / linear / convT layer has a bias.
"""
import argparse
import json
import math
import resource
import sys
import re
import time


def _vm_rss_mb():
    with open("/proc/self/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1)) / 1024.0


import torch  # noqa: E402

IMPORT_RSS_MB = _vm_rss_mb()   # RSS right after `import torch` (CUDA-enabled wheel: ~590 MB)
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402


# ---------------------------------------------------------------- M1 LeNet-5
class LeNet5(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(400, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)   # 6x14x14
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)   # 16x5x5
        x = x.flatten(1)                             # 400
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


# ---------------------------------------------------------------- M2 ResNet-20
class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
        else:
            self.shortcut = nn.Identity()

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet20(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv = nn.Conv2d(1, 16, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        layers = []
        cin = 16
        for i, c in enumerate([16, 32, 64]):
            for j in range(3):
                stride = 2 if (i > 0 and j == 0) else 1
                layers.append(BasicBlock(cin, c, stride))
                cin = c
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = F.relu(self.bn(self.conv(x)))   # 16x28x28
        x = self.layers(x)                  # 64x7x7
        x = x.mean(dim=(2, 3))              # global avg pool
        return self.fc(x)


# ---------------------------------------------------------------- M3 VAE
class VAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 400)
        self.fc_mu = nn.Linear(400, 20)
        self.fc_logvar = nn.Linear(400, 20)
        self.fc3 = nn.Linear(20, 400)
        self.fc4 = nn.Linear(400, 784)

    def forward(self, x):
        h = F.relu(self.fc1(x))
        mu, logvar = self.fc_mu(h), self.fc_logvar(h)
        eps = torch.randn_like(mu)
        z = mu + torch.exp(0.5 * logvar) * eps
        logits = self.fc4(F.relu(self.fc3(z)))
        return logits, mu, logvar


def vae_loss(logits, x, mu, logvar):
    bce = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kl


# ---------------------------------------------------------------- M4 RealNVP
class Coupling(nn.Module):
    """Affine coupling: conditioning half -> MLP 392-512-512-784 -> (s=tanh, t)."""

    def __init__(self, dim=784, hidden=512, cond_first=True):
        super().__init__()
        self.half = dim // 2
        self.cond_first = cond_first
        self.net = nn.Sequential(
            nn.Linear(self.half, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, 2 * self.half))

    def forward(self, x):
        a, b = x[:, :self.half], x[:, self.half:]
        if not self.cond_first:          # swap roles
            a, b = b, a
        st = self.net(a)
        s = torch.tanh(st[:, :self.half])
        t = st[:, self.half:]
        b = b * torch.exp(s) + t
        logdet = s.sum(dim=1)
        y = torch.cat([a, b], dim=1) if self.cond_first else torch.cat([b, a], dim=1)
        return y, logdet


class RealNVP(nn.Module):
    def __init__(self, dim=784, n_layers=8):
        super().__init__()
        self.dim = dim
        self.layers = nn.ModuleList(
            [Coupling(dim, 512, cond_first=(i % 2 == 0)) for i in range(n_layers)])

    def forward(self, x):
        logdet = torch.zeros(x.shape[0], dtype=x.dtype)
        for layer in self.layers:
            x, ld = layer(x)
            logdet = logdet + ld
        log_pz = -0.5 * (x * x).sum(dim=1) - 0.5 * self.dim * math.log(2 * math.pi)
        return log_pz + logdet   # log-likelihood per sample


# ---------------------------------------------------------------- M5 DCGAN
class Generator(nn.Module):
    def __init__(self, nz=100):
        super().__init__()
        self.fc = nn.Linear(nz, 128 * 7 * 7, bias=False)
        self.bn0 = nn.BatchNorm1d(128 * 7 * 7)
        self.ct1 = nn.ConvTranspose2d(128, 64, 4, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.ct2 = nn.ConvTranspose2d(64, 1, 4, stride=2, padding=1)

    def forward(self, z):
        x = F.relu(self.bn0(self.fc(z))).view(-1, 128, 7, 7)
        x = F.relu(self.bn1(self.ct1(x)))    # 64x14x14
        return torch.tanh(self.ct2(x))       # 1x28x28


class Discriminator(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 64, 4, stride=2, padding=1)
        self.c2 = nn.Conv2d(64, 128, 4, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(128)
        self.fc = nn.Linear(128 * 7 * 7, 1)

    def forward(self, x):
        x = F.leaky_relu(self.c1(x), 0.2)               # 64x14x14
        x = F.leaky_relu(self.bn2(self.c2(x)), 0.2)     # 128x7x7
        return self.fc(x.flatten(1))


class DCGAN(nn.Module):
    def __init__(self):
        super().__init__()
        self.G = Generator()
        self.D = Discriminator()


# ---------------------------------------------------------------- M6 U-Net
def double_conv(cin, cout):
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UNet(nn.Module):
    def __init__(self, cin=1, n_classes=2):
        super().__init__()
        self.e1 = double_conv(cin, 32)
        self.e2 = double_conv(32, 64)
        self.e3 = double_conv(64, 128)
        self.bott = double_conv(128, 256)
        self.up3 = nn.ConvTranspose2d(256, 128, 2, stride=2)
        self.d3 = double_conv(256, 128)
        self.up2 = nn.ConvTranspose2d(128, 64, 2, stride=2)
        self.d2 = double_conv(128, 64)
        self.up1 = nn.ConvTranspose2d(64, 32, 2, stride=2)
        self.d1 = double_conv(64, 32)
        self.head = nn.Conv2d(32, n_classes, 1)

    def forward(self, x):
        s1 = self.e1(x)                              # 32x64x64
        s2 = self.e2(F.max_pool2d(s1, 2))            # 64x32x32
        s3 = self.e3(F.max_pool2d(s2, 2))            # 128x16x16
        b = self.bott(F.max_pool2d(s3, 2))           # 256x8x8
        x = self.d3(torch.cat([self.up3(b), s3], 1))  # 128x16x16
        x = self.d2(torch.cat([self.up2(x), s2], 1))  # 64x32x32
        x = self.d1(torch.cat([self.up1(x), s1], 1))  # 32x64x64
        return self.head(x)                          # 2x64x64


# ---------------------------------------------------------------- workloads
def count_params(m):
    return sum(p.numel() for p in m.parameters())


def build(name, g, batch=None):
    """Returns (model, batch, step_fn). step_fn() does one full training step, returns loss."""
    if name == "M1":
        B = batch or 128
        model = LeNet5()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        x = torch.rand(B, 1, 28, 28, generator=g)
        y = torch.randint(0, 10, (B,), generator=g)

        def step():
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            return loss
    elif name == "M2":
        B = batch or 128
        model = ResNet20()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        x = torch.rand(B, 1, 28, 28, generator=g)
        y = torch.randint(0, 10, (B,), generator=g)

        def step():
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            return loss
    elif name == "M3":
        B = batch or 128
        model = VAE()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        x = torch.rand(B, 784, generator=g)   # targets in [0,1] for BCE

        def step():
            opt.zero_grad()
            logits, mu, logvar = model(x)
            loss = vae_loss(logits, x, mu, logvar)
            loss.backward()
            opt.step()
            return loss
    elif name == "M4":
        B = batch or 128
        model = RealNVP()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        x = torch.randn(B, 784, generator=g)

        def step():
            opt.zero_grad()
            loss = -model(x).mean()   # negative log-likelihood (nats / sample)
            loss.backward()
            opt.step()
            return loss
    elif name == "M5":
        B = batch or 64
        model = DCGAN()
        G, D = model.G, model.D
        optG = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
        optD = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
        real = torch.rand(B, 1, 28, 28, generator=g) * 2 - 1   # tanh range
        z = torch.randn(B, 100, generator=g)
        ones = torch.ones(B, 1)
        zeros = torch.zeros(B, 1)

        def step():
            # D update: real + fake (fake detached)
            fake = G(z)
            optD.zero_grad()
            lossD = (F.binary_cross_entropy_with_logits(D(real), ones)
                     + F.binary_cross_entropy_with_logits(D(fake.detach()), zeros))
            lossD.backward()
            optD.step()
            # G update: non-saturating loss, reuses the same fake batch
            optG.zero_grad()
            lossG = F.binary_cross_entropy_with_logits(D(fake), ones)
            lossG.backward()
            optG.step()
            return lossD + lossG
    elif name == "M6":
        B = batch or 16
        model = UNet()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        x = torch.rand(B, 1, 64, 64, generator=g)
        y = torch.randint(0, 2, (B, 64, 64), generator=g)

        def step():
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)   # per-pixel CE, mean
            loss.backward()
            opt.step()
            return loss
    else:
        raise SystemExit(f"unknown workload {name}")
    model.train()
    return model, B, step


# steps so that each workload takes roughly 5-15 s on the 2-core reference box
DEFAULT_STEPS = {"M1": 1000, "M2": 40, "M3": 2000, "M4": 200, "M5": 150, "M6": 25}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("workload", choices=sorted(DEFAULT_STEPS))
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch", type=int, default=None)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    steps = args.steps or DEFAULT_STEPS[args.workload]

    model, B, step = build(args.workload, g, args.batch)
    n_params = count_params(model)
    print(f"[{args.workload}] params = {n_params}", file=sys.stderr)
    for n, c in model.named_children():
        print(f"  {n}: {count_params(c)}", file=sys.stderr)

    for _ in range(args.warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
    loss_val = loss.detach().item()   # CPU eager is synchronous anyway
    dt = time.perf_counter() - t0

    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB -> MiB
    out = {
        "workload": args.workload,
        "impl": "pytorch",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch": B,
        "steps": steps,
        "steps_per_s": round(steps / dt, 4),
        "samples_per_s": round(steps * B / dt, 2),
        "peak_rss_mb": round(peak_rss_mb, 1),
        "import_rss_mb": round(IMPORT_RSS_MB, 1),
        "params": n_params,
        "wall_s": round(dt, 3),
        "final_loss": round(loss_val, 5),
    }
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
