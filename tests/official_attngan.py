"""The official AttnGAN generator and DAMSM text encoder, re-stated for tests in their own names and layout.

Written from taoxugit/AttnGAN ``code/model.py`` (G_NET, NEXT_STAGE_G, RNN_ENCODER, CNN_ENCODER; CA_NET,
INIT_STAGE_G, GET_IMAGE_G and the blocks are StackGAN-v2's, reused from ``official_stackgan_v2``) and
``code/GlobalAttention.py`` (GlobalAttentionGeneral) for Python 3 and current PyTorch, with the
global ``cfg`` replaced by constructor arguments (defaults: ``code/cfg/bird_attn2.yml``) and one
change needed for an exact comparison: ``CA_NET`` takes the reparametrisation noise ``eps``.
``CNN_ENCODER`` starts from an untrained torchvision Inception-v3 (the official one loads the ImageNet
weights) and resizes as PyTorch 0.3's ``nn.Upsample(mode='bilinear')`` did (``align_corners=True``).
Module names, Sequential indices, layer order and the forward passes are the official ones, including
the attention mask laid out with ``mask.repeat(queryL, 1)``, so ``state_dict()`` has the official
names (``h_net2.att.conv_context.weight``, ``rnn.weight_ih_l0_reverse``, ...).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from official_stackgan_v2 import CA_NET, GET_IMAGE_G, INIT_STAGE_G, ResBlock, upBlock
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


def conv1x1(in_planes, out_planes):
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=1, padding=0, bias=False)


class GlobalAttentionGeneral(nn.Module):
    def __init__(self, idf, cdf):
        super().__init__()
        self.conv_context = conv1x1(cdf, idf)
        self.sm = nn.Softmax(dim=1)
        self.mask = None

    def applyMask(self, mask):  # noqa: N802 (official name)
        self.mask = mask  # batch x sourceL

    def forward(self, input, context):  # noqa: A002 (official name)
        ih, iw = input.size(2), input.size(3)
        queryL = ih * iw  # noqa: N806 (official name)
        batch_size, sourceL = context.size(0), context.size(2)  # noqa: N806
        target = input.view(batch_size, -1, queryL)
        targetT = torch.transpose(target, 1, 2).contiguous()  # noqa: N806
        sourceT = context.unsqueeze(3)  # noqa: N806
        sourceT = self.conv_context(sourceT).squeeze(3)  # noqa: N806
        attn = torch.bmm(targetT, sourceT)
        attn = attn.view(batch_size * queryL, sourceL)
        if self.mask is not None:
            mask = self.mask.repeat(queryL, 1)  # row r gets caption r % batch's mask: the official quirk
            attn = attn.masked_fill(mask, -float("inf"))
        attn = self.sm(attn)
        attn = attn.view(batch_size, queryL, sourceL)
        attn = torch.transpose(attn, 1, 2).contiguous()
        weightedContext = torch.bmm(sourceT, attn)  # noqa: N806
        weightedContext = weightedContext.view(batch_size, -1, ih, iw)  # noqa: N806
        attn = attn.view(batch_size, -1, ih, iw)
        return weightedContext, attn


class NEXT_STAGE_G(nn.Module):  # noqa: N801 (official name)
    def __init__(self, ngf, nef, ncf, r_num):
        super().__init__()
        self.gf_dim, self.ef_dim, self.cf_dim = ngf, nef, ncf
        self.att = GlobalAttentionGeneral(ngf, nef)
        self.residual = nn.Sequential(*[ResBlock(ngf * 2) for _ in range(r_num)])
        self.upsample = upBlock(ngf * 2, ngf)

    def forward(self, h_code, c_code, word_embs, mask):
        self.att.applyMask(mask)
        c_code, att = self.att(h_code, word_embs)
        h_c_code = torch.cat((h_code, c_code), 1)
        out_code = self.residual(h_c_code)
        return self.upsample(out_code), att


class G_NET(nn.Module):  # noqa: N801 (official name)
    """bird_attn2.yml by default; coco_attn2.yml is ``G_NET(gf_dim=48, r_num=3)``."""

    def __init__(self, gf_dim=32, branch_num=3, z_dim=100, condition_dim=100, embedding_dim=256, r_num=2):
        super().__init__()
        ngf, nef, ncf = gf_dim, embedding_dim, condition_dim
        self.branch_num = branch_num
        self.ca_net = CA_NET(nef, ncf)
        self.h_net1 = INIT_STAGE_G(ngf * 16, z_dim + ncf)
        self.img_net1 = GET_IMAGE_G(ngf)
        if branch_num > 1:
            self.h_net2 = NEXT_STAGE_G(ngf, nef, ncf, r_num)
            self.img_net2 = GET_IMAGE_G(ngf)
        if branch_num > 2:
            self.h_net3 = NEXT_STAGE_G(ngf, nef, ncf, r_num)
            self.img_net3 = GET_IMAGE_G(ngf)

    def forward(self, z_code, sent_emb, word_embs, mask, eps):
        fake_imgs, att_maps = [], []
        c_code, mu, logvar = self.ca_net(sent_emb, eps)
        h_code = self.h_net1(z_code, c_code)
        fake_imgs.append(self.img_net1(h_code))
        for i in range(2, self.branch_num + 1):
            h_code, att = getattr(self, f"h_net{i}")(h_code, c_code, word_embs, mask)
            fake_imgs.append(getattr(self, f"img_net{i}")(h_code))
            att_maps.append(att)
        return fake_imgs, att_maps, mu, logvar


class RNN_ENCODER(nn.Module):  # noqa: N801 (official name)
    """cfg.RNN_TYPE 'LSTM', one bidirectional layer; the caller sorts the batch by length (datasets.py: prepare_data)."""

    def __init__(self, ntoken, ninput=300, drop_prob=0.5, nhidden=256, nlayers=1, bidirectional=True):
        super().__init__()
        self.ntoken, self.ninput, self.drop_prob, self.nlayers = ntoken, ninput, drop_prob, nlayers
        self.num_directions = 2 if bidirectional else 1
        self.nhidden = nhidden // self.num_directions
        self.encoder = nn.Embedding(ntoken, ninput)
        self.drop = nn.Dropout(drop_prob)
        # dropout between layers: a no-op for one layer (PyTorch warns about it, as it did officially)
        self.rnn = nn.LSTM(ninput, self.nhidden, nlayers, batch_first=True, dropout=0.0, bidirectional=bidirectional)

    def init_hidden(self, bsz):
        weight = next(self.parameters())
        shape = (self.nlayers * self.num_directions, bsz, self.nhidden)
        return weight.new_zeros(shape), weight.new_zeros(shape)

    def forward(self, captions, cap_lens, hidden, mask=None):
        emb = self.drop(self.encoder(captions))
        cap_lens = cap_lens.data.tolist()
        emb = pack_padded_sequence(emb, cap_lens, batch_first=True)
        output, hidden = self.rnn(emb, hidden)
        output = pad_packed_sequence(output, batch_first=True)[0]
        words_emb = output.transpose(1, 2)
        sent_emb = hidden[0].transpose(0, 1).contiguous()
        sent_emb = sent_emb.view(-1, self.nhidden * self.num_directions)
        return words_emb, sent_emb


class CNN_ENCODER(nn.Module):  # noqa: N801 (official name)
    LAYERS = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3", "Mixed_5b",
              "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a",
              "Mixed_7b", "Mixed_7c")

    def __init__(self, nef=256):
        super().__init__()
        from torchvision import models

        model = models.inception_v3(weights=None, aux_logits=False, init_weights=False)
        for name in self.LAYERS:  # define_module
            setattr(self, name, getattr(model, name))
        self.emb_features = conv1x1(768, nef)
        self.emb_cnn_code = nn.Linear(2048, nef)

    def forward(self, x):
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=True)
        x = self.Conv2d_1a_3x3(x)
        x = self.Conv2d_2a_3x3(x)
        x = self.Conv2d_2b_3x3(x)
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_3b_1x1(x)
        x = self.Conv2d_4a_3x3(x)
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for name in self.LAYERS[5:13]:
            x = getattr(self, name)(x)
        features = x
        for name in self.LAYERS[13:]:
            x = getattr(self, name)(x)
        x = F.avg_pool2d(x, kernel_size=8)
        x = x.view(x.size(0), -1)
        cnn_code = self.emb_cnn_code(x)
        features = self.emb_features(features)
        return features, cnn_code


@torch.no_grad()
def randomised_encoder(net: RNN_ENCODER, seed: int = 0) -> RNN_ENCODER:
    """``net`` in eval mode with random embeddings (U(-0.1, 0.1), as init_weights) and LSTM weights."""
    generator = torch.Generator().manual_seed(seed)
    for parameter in net.parameters():
        parameter.copy_((torch.rand(parameter.shape, generator=generator) * 2 - 1) * 0.1 * (3 if parameter.ndim == 1 else 1))
    return net.eval()
