"""``stackgan2 import``: officially released weights -> a stackgan2 pipeline directory (thin; see stackgan2.official)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stackgan2.cli.common import console, handle_errors
from stackgan2.cli.options import ConfigFile

# stackgan2.official's family names, repeated so that --help needs no torch
FAMILY_NAMES = "stackgan-v2, attngan or stackgan-v1"


@handle_errors
def import_weights(
    weights: Annotated[
        Path, typer.Argument(help="The official generator file, e.g. netG_210000.pth (StackGAN-v2 birds), "
                             "bird_AttnGAN2.pth (AttnGAN).", show_default=False)
    ],
    family: Annotated[str, typer.Option("--from", help=f"Which official code saved it: {FAMILY_NAMES}.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Pipeline directory to write (new, empty or a previous pipeline).")],
    preset: Annotated[
        str | None, typer.Option("--preset", help="Architecture of the file (default: the family's released model, birds).")
    ] = None,
    config: ConfigFile = None,
    text_encoder: Annotated[
        Path | None, typer.Option("--text-encoder", help="AttnGAN: the DAMSM text encoder it was trained with "
                                  "(text_encoder200.pth birds, text_encoder100.pth COCO).")
    ] = None,
    vocab: Annotated[
        Path | None, typer.Option("--vocab", help="AttnGAN: the captions.pickle vocabulary of that text encoder "
                                  "(read without unpickling any code).")
    ] = None,
    image_encoder: Annotated[
        Path | None, typer.Option("--image-encoder", help="AttnGAN (optional): the DAMSM image encoder "
                                  "(image_encoder200.pth), kept in DIR/damsm for eval --metrics r-precision.")
    ] = None,
    aligned_mask: Annotated[
        bool, typer.Option("--aligned-mask", help="AttnGAN: give every pixel its own caption's padding mask. By "
                           "default the official misaligned mask the released models were trained with is kept "
                           "(GlobalAttention.py mask.repeat; model.attention_official_mask = true).")
    ] = False,
) -> None:
    """Turn officially released weights into a pipeline directory for sample, interpolate, eval and --init-from.

    The file is read without running any code in it, every tensor is checked against the preset's architecture, and the directory records where it came from (file name, sha256, family, preset). AttnGAN also needs its DAMSM text encoder and vocabulary, which become the pipeline's text encoder.
    """
    from stackgan2.official import import_official

    overrides = {"model.attention_official_mask": False} if aligned_mask else None
    pipe = import_official(weights, family, out, preset=preset, config_file=config, overrides=overrides,
                           text_encoder=text_encoder, vocab=vocab, image_encoder=image_encoder)
    source = pipe.source or {}
    model = pipe.config.model
    console.print(str(out), highlight=False, soft_wrap=True)
    console.print(
        f"{source.get('family')} {source.get('file')} (sha256 {str(source.get('sha256'))[:12]}...), preset "
        f"{pipe.config.preset}: {source.get('tensors')} tensors, branches "
        f"{'/'.join(map(str, model.resolutions))} px",
        highlight=False,
        soft_wrap=True,
    )
    if pipe.text_encoder is not None:
        mask = ("official (misaligned at batch > 1, as trained; --aligned-mask to fix)"
                if model.attention_official_mask else "aligned")
        console.print(
            f"text encoder {source['text_encoder']['file']}, vocabulary {source['vocab']['file']} "
            f"({source['vocab']['words']:,} words); attention mask: {mask}",
            highlight=False,
            soft_wrap=True,
        )
        if "image_encoder" in source:
            damsm = f"DAMSM image encoder {source['image_encoder']['file']} in {out / 'damsm'}: eval --metrics r-precision uses it"
        else:
            damsm = ("no DAMSM image encoder (--image-encoder image_encoder200.pth): eval --metrics r-precision then "
                     "needs --text-encoder DIR with one")
        console.print(damsm, highlight=False, soft_wrap=True)
        console.print(f"stackgan2 sample --model {out} \"this bird is red with white wings\"", highlight=False,
                      soft_wrap=True)
    else:
        console.print(
            f"no text encoder (conditioned on {model.text_dim}-d char-CNN-RNN embeddings): "
            f"stackgan2 sample --model {out} --embeddings char-CNN-RNN-embeddings.pickle --index 0",
            highlight=False,
            soft_wrap=True,
        )


def register(app: typer.Typer) -> None:
    app.command("import")(import_weights)
