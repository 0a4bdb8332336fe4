"""`sentembed serve MODEL [--index DIR] [--reranker DIR] [--dtype DTYPE] [--quantize int8] [--host 127.0.0.1]
[--port 8080] [--api-key KEY] [--api-keys FILE] [--rate-limit TOKENS_PER_S [--rate-burst TOKENS]]
[--cors-origin URL]`."""
from __future__ import annotations

import ipaddress
import os
import signal
from pathlib import Path
from typing import List, Optional

import typer

from sentembed.backends.options import dtype_option, quantize_option


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def register(app: typer.Typer) -> None:
    """Add `serve` to the CLI."""

    @app.command()
    def serve(
        model: str = typer.Argument(..., help="Model name or Sentence Transformers directory."),
        index: Optional[Path] = typer.Option(None, "--index", help="Serve this index: enables /search and /index/*."),
        reranker: Optional[str] = typer.Option(None, "--reranker", help="A cross-encoder (name or directory): enables /rerank."),
        host: str = typer.Option("127.0.0.1", help="Address to bind; loopback unless you say otherwise."),
        port: int = typer.Option(8080, help="Port to bind."),
        api_key: Optional[str] = typer.Option(None, "--api-key", envvar="SENTEMBED_API_KEY",
                                              help="Require 'Authorization: Bearer KEY' (or X-API-Key); the admin's key."),
        api_keys: Optional[Path] = typer.Option(
            None, "--api-keys", help="Client keys, one a line: 'KEY [NAME]'; usage and rate limits go by name. "
                                     "Read again when it changes, or on SIGHUP."),
        rate_limit: Optional[float] = typer.Option(
            None, "--rate-limit", help="Tokens a second each key name may spend (429 with Retry-After beyond)."),
        rate_burst: Optional[float] = typer.Option(
            None, "--rate-burst", help="Tokens a key name may spend at once (default: one second of --rate-limit)."),
        device: str = typer.Option("cpu", help="Torch device for the model."),
        dtype: str = dtype_option("The --reranker's too."),
        quantize: Optional[str] = quantize_option("The --reranker's too (its classification head stays float32)."),
        # One budget for every --dtype and --quantize: it bounds what is taken from the queue at once
        # (padding and waiting), while the encoder's planner cuts the forward passes, int8's as offline.
        max_batch_tokens: int = typer.Option(16384, help="Input tokens per model batch; lower answers sooner, pads more."),
        max_client_batch_size: int = typer.Option(512, help="Inputs per request (413 beyond)."),
        max_queue_items: int = typer.Option(8192, help="Inputs waiting (429 beyond)."),
        max_body_bytes: int = typer.Option(4 * 1024 * 1024, help="Request body size (413 beyond)."),
        max_input_chars: int = typer.Option(1_000_000, help="Characters of one input (413 beyond)."),
        auto_truncate: bool = typer.Option(False, help="Truncate long inputs instead of answering 422."),
        batching: bool = typer.Option(True, help="--no-batching runs every request alone (for comparison)."),
        encode_batch_size: int = typer.Option(32, min=1, help="Texts a forward pass inside one model batch."),
        cors_origin: Optional[List[str]] = typer.Option(
            None, "--cors-origin", help="Let pages of this web origin call the API from a browser (CORS); "
                                        "repeat for more, '*' for any. Off by default."),
        log_level: str = typer.Option("info", help="uvicorn log level."),
    ) -> None:
        """Serve embeddings (OpenAI-compatible /v1/embeddings, /embed, /similarity) and search over HTTP."""
        import uvicorn

        import sentembed
        from sentembed.server.app import create_app
        from sentembed.server.keys import KeyRing
        from sentembed.server.limits import ServerConfig
        from sentembed.server.quota import Quota

        if api_key is None and "SENTEMBED_API_KEY" in os.environ:
            api_key = os.environ["SENTEMBED_API_KEY"]  # click reads an empty variable as unset: auth off, silently
        try:  # before the model loads: a bad key or keys file is one line at once
            KeyRing(api_key, api_keys)
            Quota(rate_limit, rate_burst)
        except ValueError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from None
        if not _is_loopback(host) and not (api_key or api_keys):
            typer.echo(f"warning: serving on {host} without --api-key: anyone who can reach it can use it", err=True)
        how = dict(device=device, dtype=dtype, quantize=quantize)  # the encoder and the reranker alike
        try:  # load names what cannot run here (int8 on a GPU, float16 on a CPU) in one line
            enc = sentembed.load(model, **how)
            cross = sentembed.load_cross_encoder(reranker, **how) if reranker is not None else None
        except (FileNotFoundError, ValueError, RuntimeError) as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from None
        if quantize is not None:
            # The int8 graph is compiled (or read from disk) now, before the port opens: the
            # first request never waits for the compiler.
            enc.encode(["warm up"])
            if cross is not None:
                cross.predict([("warm", "up")])
        idx = None
        if index is not None:
            from sentembed.search import Index

            idx = Index.open(index, enc=enc)
        config = ServerConfig(
            api_key=api_key, max_client_batch_size=max_client_batch_size, max_body_bytes=max_body_bytes,
            max_input_chars=max_input_chars, api_keys_file=str(api_keys) if api_keys else None,
            rate_limit=rate_limit, rate_burst=rate_burst,
            max_batch_tokens=max_batch_tokens, max_queue_items=max_queue_items, auto_truncate=auto_truncate,
            batching=batching, encode_batch_size=encode_batch_size, model_name=model,
            cors_origins=tuple(cors_origin or ()),
        )
        application = create_app(enc, idx, config, reranker=cross)
        if api_keys is not None and hasattr(signal, "SIGHUP"):  # uvicorn handles INT and TERM, not HUP
            signal.signal(signal.SIGHUP, lambda *_: application.state.service.keys.reload_soon())
        # One process: the model is loaded once and the batcher sees every request.
        uvicorn.run(application, host=host, port=port, workers=1, log_level=log_level, timeout_graceful_shutdown=10)
