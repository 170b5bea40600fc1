"""Export a Piper voice of the MEDIUM architecture with random weights, for timing only (it speaks noise).

Real voices cannot be downloaded here, yet synthesis time depends on the network's architecture, not on what its
weights learned. This builds piper's own VITS generator (``piper.train.vits.models.SynthesizerTrn``, shipped with
piper-tts) with the hyper-parameters of Piper's "medium" quality -- the defaults of ``piper.train.vits.lightning.
VitsModel``, which en_US-lessac-medium and the other medium voices were trained with -- and exports it to ONNX exactly
as ``piper.train.export_onnx`` does (weight norm removed, ``infer`` as forward, opset 15, same input/output names).

Random weights give a random duration predictor, so the speaking rate is calibrated: the config's
``inference.length_scale`` is set so that the voice reads English at ``TARGET_WORDS_PER_MINUTE``, a conversational
rate like that of the published voices. Synthesis time grows with the audio produced, so the real-time factor then
compares like with like.

Needs PyTorch, which is not a dependency of the bot: ``.venv/bin/pip install torch==2.13.0`` (CPU wheel) first.
Usage: ``.venv/bin/python -m bench.make_piper_medium_random``; writes
data/models/bench/en_US-random-medium.onnx and .onnx.json (about 60 MB, like a real medium voice).
"""

from __future__ import annotations

import argparse
import json
import logging
import warnings
from pathlib import Path

VOICE_NAME = "en_US-random-medium"
OUT_DIR = Path("data/models/bench")
SAMPLE_RATE = 22_050
HOP_LENGTH = 256
TARGET_WORDS_PER_MINUTE = 170  # conversational English; espeak-ng's default rate is 175
CALIBRATION_TEXT = (
    "The quick brown fox jumps over the lazy dog. Our meeting starts at nine tomorrow morning, so please be on time. "
    "If you have any questions about the schedule, ask in the general channel and someone will help you."
)
OPSET_VERSION = 15  # piper.train.export_onnx.OPSET_VERSION

# piper.train.vits.lightning.VitsModel defaults = Piper's "medium" quality.
MEDIUM = {
    "inter_channels": 192,
    "hidden_channels": 192,
    "filter_channels": 768,
    "n_heads": 2,
    "n_layers": 6,
    "kernel_size": 3,
    "p_dropout": 0.1,
    "resblock": "2",
    "resblock_kernel_sizes": (3, 5, 7),
    "resblock_dilation_sizes": ((1, 2), (2, 6), (3, 12)),
    "upsample_rates": (8, 8, 4),
    "upsample_initial_channel": 256,
    "upsample_kernel_sizes": (16, 16, 8),
    "use_sdp": True,
}
FILTER_LENGTH = 1024
SEGMENT_SIZE = 8192

log = logging.getLogger(__name__)


def export(out_dir: Path) -> Path:
    """Build, export and calibrate the voice; returns the .onnx path."""
    import torch
    from piper.phoneme_ids import DEFAULT_PHONEME_ID_MAP
    from piper.train.vits.models import SynthesizerTrn

    # Quieted: the tracer's notes on piper's Python-side shape checks becoming constants (its own export_onnx
    # prints the same; the graph still takes any phoneme count), and deprecation notices of the legacy exporter
    # and of weight_norm.
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    torch.manual_seed(1234)
    num_symbols = 256
    model_g = SynthesizerTrn(
        n_vocab=num_symbols,
        spec_channels=FILTER_LENGTH // 2 + 1,
        segment_size=SEGMENT_SIZE // HOP_LENGTH,
        n_speakers=1,
        gin_channels=0,
        **MEDIUM,
    )
    model_g.eval()
    with torch.no_grad():
        model_g.dec.remove_weight_norm()

    def infer_forward(text: torch.Tensor, text_lengths: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
        return model_g.infer(
            text, text_lengths, noise_scale=scales[0], length_scale=scales[1], noise_scale_w=scales[2]
        )[0].unsqueeze(1)

    model_g.forward = infer_forward  # type: ignore[method-assign,assignment]
    sequences = torch.randint(low=0, high=num_symbols, size=(1, 50), dtype=torch.long)
    dummy_input = (sequences, torch.LongTensor([sequences.size(1)]), torch.FloatTensor([0.667, 1.0, 0.8]))

    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / f"{VOICE_NAME}.onnx"
    torch.onnx.export(
        model=model_g,
        args=dummy_input,
        f=str(model_path),
        opset_version=OPSET_VERSION,
        input_names=["input", "input_lengths", "scales"],
        output_names=["output"],
        dynamic_axes={
            "input": {0: "batch_size", 1: "phonemes"},
            "input_lengths": {0: "batch_size"},
            "output": {0: "batch_size", 2: "time"},
        },
        dynamo=False,  # the TorchScript exporter piper.train.export_onnx relies on (dynamic_axes)
    )
    config = {
        "dataset": "random-medium",
        "audio": {"sample_rate": SAMPLE_RATE, "quality": "medium"},
        "espeak": {"voice": "en-us"},
        "language": {"code": "en_US"},
        "inference": {"noise_scale": 0.667, "length_scale": 1.0, "noise_w": 0.8},
        "phoneme_type": "espeak",
        "phoneme_id_map": DEFAULT_PHONEME_ID_MAP,
        "num_symbols": num_symbols,
        "num_speakers": 1,
        "speaker_id_map": {},
        "piper_version": "1.0.0",
        "hop_length": HOP_LENGTH,
    }
    config_path = model_path.with_name(model_path.name + ".json")
    config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    config["inference"]["length_scale"] = _calibrate(model_path)  # type: ignore[index]
    config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return model_path


def _calibrate(model_path: Path) -> float:
    """length_scale at which the random voice reads CALIBRATION_TEXT at TARGET_WORDS_PER_MINUTE.

    Phonemized and run through piper's own pipeline (PiperVoice), one sentence at a time as the bot does.
    """
    from piper import PiperVoice
    from piper.config import SynthesisConfig

    voice = PiperVoice.load(model_path)
    sentences = [voice.phonemes_to_ids(phonemes) for phonemes in voice.phonemize(CALIBRATION_TEXT)]
    target_s = len(CALIBRATION_TEXT.split()) / TARGET_WORDS_PER_MINUTE * 60

    def seconds(length_scale: float) -> float:
        # Durations carry noise (noise_w): average two readings.
        config = SynthesisConfig(length_scale=length_scale)
        samples = [len(voice.phoneme_ids_to_audio(ids, config)) for ids in sentences for _ in range(2)]
        return sum(samples) / 2 / SAMPLE_RATE

    low, high = 0.05, 50.0  # bisection: the output grows monotonically with length_scale
    for _ in range(16):
        middle = (low * high) ** 0.5
        low, high = (middle, high) if seconds(middle) < target_s else (low, middle)
    log.info("length_scale %.3f reads the calibration text in %.1f s (target %.1f s)", high, seconds(high), target_s)
    return round(high, 4)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    args = parser.parse_args()
    try:
        import torch  # noqa: F401
    except ImportError:
        raise SystemExit("PyTorch is needed to export the model: .venv/bin/pip install torch==2.13.0") from None
    path = export(args.out_dir)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) and {path.name}.json")


if __name__ == "__main__":
    main()
