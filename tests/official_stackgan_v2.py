"""The official StackGAN++ generator, re-stated for tests in its own names and layout.

Written from hanzhanggit/StackGAN-v2 ``code/model.py`` (G_NET, CA_NET, INIT_STAGE_G, NEXT_STAGE_G,
GET_IMAGE_G, upBlock, Block3x3_relu, ResBlock, GLU) for Python 3 and current PyTorch, with the
global ``cfg`` replaced by constructor arguments and one change needed for an exact comparison:
``CA_NET`` takes the reparametrisation noise ``eps`` as an argument instead of drawing it. Module
names, Sequential indices, layer order and the forward pass are the official ones, so
``state_dict()`` has the official names (``ca_net.fc.weight``, ``h_net1.upsample1.1.weight``, ...).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn


class GLU(nn.Module):
    def forward(self, x):
        nc = x.size(1) // 2
        return x[:, :nc] * F.sigmoid(x[:, nc:])


def conv3x3(in_planes, out_planes):
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)


def upBlock(in_planes, out_planes):  # noqa: N802 (official name)
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"), conv3x3(in_planes, out_planes * 2), nn.BatchNorm2d(out_planes * 2), GLU()
    )


def Block3x3_relu(in_planes, out_planes):  # noqa: N802 (official name)
    return nn.Sequential(conv3x3(in_planes, out_planes * 2), nn.BatchNorm2d(out_planes * 2), GLU())


class ResBlock(nn.Module):
    def __init__(self, channel_num):
        super().__init__()
        self.block = nn.Sequential(
            conv3x3(channel_num, channel_num * 2), nn.BatchNorm2d(channel_num * 2), GLU(),
            conv3x3(channel_num, channel_num), nn.BatchNorm2d(channel_num),
        )

    def forward(self, x):
        residual = x
        out = self.block(x)
        out += residual
        return out


class CA_NET(nn.Module):  # noqa: N801 (official name)
    def __init__(self, t_dim, ef_dim):
        super().__init__()
        self.t_dim, self.ef_dim = t_dim, ef_dim
        self.fc = nn.Linear(t_dim, ef_dim * 4, bias=True)
        self.relu = GLU()

    def encode(self, text_embedding):
        x = self.relu(self.fc(text_embedding))
        return x[:, : self.ef_dim], x[:, self.ef_dim :]

    def reparametrize(self, mu, logvar, eps):
        std = logvar.mul(0.5).exp_()
        return eps.mul(std).add_(mu)

    def forward(self, text_embedding, eps):
        mu, logvar = self.encode(text_embedding)
        return self.reparametrize(mu, logvar, eps), mu, logvar


class INIT_STAGE_G(nn.Module):  # noqa: N801 (official name)
    def __init__(self, ngf, in_dim):
        super().__init__()
        self.gf_dim = ngf
        self.fc = nn.Sequential(nn.Linear(in_dim, ngf * 4 * 4 * 2, bias=False), nn.BatchNorm1d(ngf * 4 * 4 * 2), GLU())
        self.upsample1 = upBlock(ngf, ngf // 2)
        self.upsample2 = upBlock(ngf // 2, ngf // 4)
        self.upsample3 = upBlock(ngf // 4, ngf // 8)
        self.upsample4 = upBlock(ngf // 8, ngf // 16)

    def forward(self, z_code, c_code):
        in_code = torch.cat((c_code, z_code), 1)
        out_code = self.fc(in_code).view(-1, self.gf_dim, 4, 4)
        out_code = self.upsample1(out_code)
        out_code = self.upsample2(out_code)
        out_code = self.upsample3(out_code)
        return self.upsample4(out_code)


class NEXT_STAGE_G(nn.Module):  # noqa: N801 (official name)
    def __init__(self, ngf, ef_dim, num_residual):
        super().__init__()
        self.gf_dim, self.ef_dim = ngf, ef_dim
        self.jointConv = Block3x3_relu(ngf + ef_dim, ngf)
        self.residual = nn.Sequential(*[ResBlock(ngf) for _ in range(num_residual)])
        self.upsample = upBlock(ngf, ngf // 2)

    def forward(self, h_code, c_code):
        s_size = h_code.size(2)
        c_code = c_code.view(-1, self.ef_dim, 1, 1).repeat(1, 1, s_size, s_size)
        h_c_code = torch.cat((c_code, h_code), 1)
        out_code = self.jointConv(h_c_code)
        out_code = self.residual(out_code)
        return self.upsample(out_code)


class GET_IMAGE_G(nn.Module):  # noqa: N801 (official name)
    def __init__(self, ngf):
        super().__init__()
        self.img = nn.Sequential(conv3x3(ngf, 3), nn.Tanh())

    def forward(self, h_code):
        return self.img(h_code)


class G_NET(nn.Module):  # noqa: N801 (official name)
    """cfg.GAN.B_CONDITION = True; defaults are code/cfg/birds_3stages.yml."""

    def __init__(self, gf_dim=64, branch_num=3, z_dim=100, ef_dim=128, t_dim=1024, r_num=2):
        super().__init__()
        self.branch_num = branch_num
        self.ca_net = CA_NET(t_dim, ef_dim)
        self.h_net1 = INIT_STAGE_G(gf_dim * 16, z_dim + ef_dim)
        self.img_net1 = GET_IMAGE_G(gf_dim)
        if branch_num > 1:
            self.h_net2 = NEXT_STAGE_G(gf_dim, ef_dim, r_num)
            self.img_net2 = GET_IMAGE_G(gf_dim // 2)
        if branch_num > 2:
            self.h_net3 = NEXT_STAGE_G(gf_dim // 2, ef_dim, r_num)
            self.img_net3 = GET_IMAGE_G(gf_dim // 4)
        if branch_num > 3:
            self.h_net4 = NEXT_STAGE_G(gf_dim // 4, ef_dim, num_residual=1)
            self.img_net4 = GET_IMAGE_G(gf_dim // 8)

    def forward(self, z_code, text_embedding, eps):
        c_code, mu, logvar = self.ca_net(text_embedding, eps)
        h_code = self.h_net1(z_code, c_code)
        fake_imgs = [self.img_net1(h_code)]
        for i in range(2, self.branch_num + 1):
            h_code = getattr(self, f"h_net{i}")(h_code, c_code)
            fake_imgs.append(getattr(self, f"img_net{i}")(h_code))
        return fake_imgs, mu, logvar


@torch.no_grad()
def randomised(net: nn.Module, seed: int = 0) -> nn.Module:
    """``net`` in eval mode with random weights and random batch-norm statistics (not the identity)."""
    generator = torch.Generator().manual_seed(seed)
    for module in net.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            fan_in = module.weight[0].numel()
            module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * (1.0 / fan_in) ** 0.5)
            if module.bias is not None:
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)
        elif isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
            n = module.num_features
            module.weight.copy_(1 + 0.2 * torch.randn(n, generator=generator))
            module.bias.copy_(0.2 * torch.randn(n, generator=generator))
            module.running_mean.copy_(0.3 * torch.randn(n, generator=generator))
            module.running_var.copy_(0.5 + torch.rand(n, generator=generator))
            module.num_batches_tracked.fill_(1234)
    return net.eval()


def released_state_dict(net: nn.Module, data_parallel: bool = True, counters: bool = False) -> dict:
    """``net.state_dict()`` as the released files hold it: ``module.`` names (saved from nn.DataParallel)
    and, as PyTorch before 0.4.1 wrote them, no ``num_batches_tracked`` counters."""
    prefix = "module." if data_parallel else ""
    return OrderedDict(
        (prefix + k, v) for k, v in net.state_dict().items() if counters or not k.endswith("num_batches_tracked")
    )
