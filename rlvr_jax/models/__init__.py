"""Flax NNX decoders (Qwen2/2.5, Qwen3, Llama 3.x) and Hugging Face checkpoint I/O."""
from .config import ModelConfig
from .decoder import Decoder, default_positions
from .hf_io import hf_tensor_map, load_hf, save_hf
from .logprobs import token_logprobs
from .presets import get_preset, preset_names
from .build import build_model, model_options

__all__ = ["ModelConfig", "Decoder", "default_positions", "get_preset", "preset_names", "load_hf", "save_hf",
           "hf_tensor_map", "token_logprobs", "build_model", "model_options"]
