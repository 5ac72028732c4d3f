"""builder.components: one component swapped for another model's weights, loaded with the class the
base model's model_index.json names for that slot."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import compose_config, read_manifest, read_run_json
from diffsweep.errors import ConfigError
from diffsweep.providers import get
from diffsweep.providers.base import ensure_tiny
from diffsweep.run.local import run_sweep

ARGS = ["sweep.params.num_inference_steps=2", "sweep.grid.seed=[0]", "sweep.grid.prompt=[a fox]"]


@pytest.fixture(scope="module")
def other_vae(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny SD VAE with its decoder's output layer inverted: same class and shapes, other pixels."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(ensure_tiny(get("stable_diffusion"), "sd"), subfolder="vae")
    with torch.no_grad():
        vae.decoder.conv_out.weight.neg_()
    folder = tmp_path_factory.mktemp("other-vae")
    vae.save_pretrained(folder)
    return folder


def _image(run_dir: Path) -> np.ndarray:
    (record,) = read_manifest(run_dir)
    return np.asarray(Image.open(run_dir / record["outputs"][0]))


def test_a_swapped_vae_changes_the_output_and_the_builder_identity(other_vae: Path, tmp_path: Path) -> None:
    base = run_sweep(compose_config(ARGS, tmp_path / "base"), out=io.StringIO()).run_dir
    swapped = run_sweep(compose_config([*ARGS, f"+builder.components={{vae: {{model: '{other_vae}'}}}}"],
                                       tmp_path / "swapped"), out=io.StringIO()).run_dir
    assert read_run_json(swapped)["status"] == "complete"
    assert not np.array_equal(_image(base), _image(swapped))
    assert read_run_json(base)["builders"][0]["hash"] != read_run_json(swapped)["builders"][0]["hash"]


def test_an_unknown_component_slot_is_a_config_error_naming_the_slots(other_vae: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"builder.components.vea: the base model has no component 'vea' "
                                          r"\(it has: .*vae.*\)"):
        run_sweep(compose_config([*ARGS, f"+builder.components={{vea: {{model: '{other_vae}'}}}}"], tmp_path / "r"))
    assert not (tmp_path / "r").exists()


def test_an_override_of_a_slot_the_model_leaves_empty_fails_with_what_is_unknown(other_vae: Path,
                                                                                  tmp_path: Path) -> None:
    """The tiny SD model's index has `image_encoder: [null, null]`: no class to load an override with."""
    result = run_sweep(compose_config([*ARGS, f"+builder.components={{image_encoder: {{model: '{other_vae}'}}}}"],
                                      tmp_path / "r"), out=io.StringIO())
    assert result.status == "failed" and result.exit_code == 3 and read_manifest(result.run_dir) == []
    (builder,) = read_run_json(result.run_dir)["builders"]  # a load failure of the builder, not failed items
    assert "builder.components.image_encoder: the base model leaves its 'image_encoder' slot empty" in \
        builder["load_error"]
