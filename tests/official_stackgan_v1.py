"""The official StackGAN v1 generators, re-stated for tests in their own names and layout.

Written from hanzhanggit/StackGAN-Pytorch ``code/model.py`` (STAGE1_G, STAGE2_G, CA_NET, upBlock,
ResBlock, conv3x3) for Python 3 and current PyTorch, with the global ``cfg`` replaced by
constructor arguments (defaults: ``code/cfg/coco_s2.yml``) and one change needed for an exact
comparison: ``CA_NET`` takes the reparametrisation noise ``eps`` instead of drawing it (Stage II
passes Stage I's and its own). Module names, Sequential indices, layer order and the forward pass
are the official ones.
"""

from __future__ import annotations

import torch
from torch import nn


def conv3x3(in_planes, out_planes, stride=1):
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def upBlock(in_planes, out_planes):  # noqa: N802 (official name)
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), conv3x3(in_planes, out_planes),
                         nn.BatchNorm2d(out_planes), nn.ReLU(True))


class ResBlock(nn.Module):
    def __init__(self, channel_num):
        super().__init__()
        self.block = nn.Sequential(conv3x3(channel_num, channel_num), nn.BatchNorm2d(channel_num), nn.ReLU(True),
                                   conv3x3(channel_num, channel_num), nn.BatchNorm2d(channel_num))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        residual = x
        out = self.block(x)
        out += residual
        return self.relu(out)


class CA_NET(nn.Module):  # noqa: N801 (official name)
    def __init__(self, t_dim, c_dim):
        super().__init__()
        self.t_dim, self.c_dim = t_dim, c_dim
        self.fc = nn.Linear(t_dim, c_dim * 2, bias=True)
        self.relu = nn.ReLU()

    def forward(self, text_embedding, eps):
        x = self.relu(self.fc(text_embedding))
        mu, logvar = x[:, : self.c_dim], x[:, self.c_dim :]
        std = logvar.mul(0.5).exp_()
        return eps.mul(std).add_(mu), mu, logvar


class STAGE1_G(nn.Module):  # noqa: N801 (official name)
    def __init__(self, gf_dim=192, ef_dim=128, z_dim=100, t_dim=1024):
        super().__init__()
        self.gf_dim, ngf = gf_dim * 8, gf_dim * 8
        self.ca_net = CA_NET(t_dim, ef_dim)
        self.fc = nn.Sequential(nn.Linear(z_dim + ef_dim, ngf * 4 * 4, bias=False), nn.BatchNorm1d(ngf * 4 * 4), nn.ReLU(True))
        self.upsample1 = upBlock(ngf, ngf // 2)
        self.upsample2 = upBlock(ngf // 2, ngf // 4)
        self.upsample3 = upBlock(ngf // 4, ngf // 8)
        self.upsample4 = upBlock(ngf // 8, ngf // 16)
        self.img = nn.Sequential(conv3x3(ngf // 16, 3), nn.Tanh())

    def forward(self, text_embedding, noise, eps):
        c_code, mu, logvar = self.ca_net(text_embedding, eps)
        h_code = self.fc(torch.cat((noise, c_code), 1)).view(-1, self.gf_dim, 4, 4)
        h_code = self.upsample4(self.upsample3(self.upsample2(self.upsample1(h_code))))
        return None, self.img(h_code), mu, logvar


class STAGE2_G(nn.Module):  # noqa: N801 (official name)
    def __init__(self, STAGE1_G, gf_dim=192, ef_dim=128, r_num=2, t_dim=1024):  # noqa: N803 (official name)
        super().__init__()
        ngf, self.ef_dim = gf_dim, ef_dim
        self.STAGE1_G = STAGE1_G
        self.ca_net = CA_NET(t_dim, ef_dim)
        self.encoder = nn.Sequential(
            conv3x3(3, ngf), nn.ReLU(True),
            nn.Conv2d(ngf, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
            nn.Conv2d(ngf * 2, ngf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True))
        self.hr_joint = nn.Sequential(conv3x3(ef_dim + ngf * 4, ngf * 4), nn.BatchNorm2d(ngf * 4), nn.ReLU(True))
        self.residual = nn.Sequential(*[ResBlock(ngf * 4) for _ in range(r_num)])
        self.upsample1 = upBlock(ngf * 4, ngf * 2)
        self.upsample2 = upBlock(ngf * 2, ngf)
        self.upsample3 = upBlock(ngf, ngf // 2)
        self.upsample4 = upBlock(ngf // 2, ngf // 4)
        self.img = nn.Sequential(conv3x3(ngf // 4, 3), nn.Tanh())

    def forward(self, text_embedding, noise, eps_stage1, eps):
        _, stage1_img, _, _ = self.STAGE1_G(text_embedding, noise, eps_stage1)
        stage1_img = stage1_img.detach()
        encoded_img = self.encoder(stage1_img)
        c_code, mu, logvar = self.ca_net(text_embedding, eps)
        c_code = c_code.view(-1, self.ef_dim, 1, 1).repeat(1, 1, 16, 16)
        h_code = self.hr_joint(torch.cat([encoded_img, c_code], 1))
        h_code = self.residual(h_code)
        h_code = self.upsample4(self.upsample3(self.upsample2(self.upsample1(h_code))))
        return stage1_img, self.img(h_code), mu, logvar
