"""Tiny random-weight diffusers pipeline components, built offline and deterministically.

Each factory returns the keyword arguments of its pipeline's constructor, for fixtures and smoke tests that must not
touch the Hugging Face hub (configs adapted from diffusers' own get_dummy_components tests). Factories import torch, diffusers and
transformers only when called, so importing this package is cheap.
"""

from __future__ import annotations

from collections.abc import Callable

from diffsweep.tiny.allegro import allegro
from diffsweep.tiny.amused import amused
from diffsweep.tiny.audioldm import audioldm, audioldm2
from diffsweep.tiny.chroma import chroma
from diffsweep.tiny.cogvideox import cogvideox
from diffsweep.tiny.common import Components
from diffsweep.tiny.flux import flux
from diffsweep.tiny.flux2 import flux2_klein
from diffsweep.tiny.qwen_image import qwen_image
from diffsweep.tiny.sana import sana, sana_sprint
from diffsweep.tiny.stable_diffusion import sd, sd3, sd_v2, sdxl
from diffsweep.tiny.wan import wan, wan22, wan22_ti2v
from diffsweep.tiny.wuerstchen import wuerstchen
from diffsweep.tiny.z_image import z_image

FACTORY_VERSION = 1
"""Bump when any factory's output changes; it is part of the cache folder names of built fixtures."""

FACTORIES: dict[str, Callable[[], Components]] = {
    "sd": sd,
    "sd_v2": sd_v2,
    "sdxl": sdxl,
    "sd3": sd3,
    "flux": flux,
    "chroma": chroma,
    "flux2_klein": flux2_klein,
    "qwen_image": qwen_image,
    "sana": sana,
    "sana_sprint": sana_sprint,
    "wan": wan,
    "wan22": wan22,
    "wan22_ti2v": wan22_ti2v,
    "cogvideox": cogvideox,
    "allegro": allegro,
    "amused": amused,
    "audioldm": audioldm,
    "audioldm2": audioldm2,
    "wuerstchen": wuerstchen,
    "z_image": z_image,
    "custom": sd,
}
"""Tiny model name -> components factory. `custom` feeds a user `DiffusionPipeline` subclass; SD components serve."""

__all__ = ["FACTORIES", "FACTORY_VERSION", "Components"]
