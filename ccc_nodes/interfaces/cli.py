"""``ccc``: the command line.

    ccc colorize INPUT... -o OUTDIR [--model REPO_OR_DIR] [--size N] [--batch N] [--device D]
"""

from __future__ import annotations

import argparse
import glob
import importlib
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ccc_nodes.core.extras import missing_module
from ccc_nodes.core.images import IMAGE_SUFFIXES, MAX_PIXELS, ImageError, open_image, output_path, save_image
from ccc_nodes.core.settings import (
    DECODE_MODES,
    INPUT_SIZE,
    MAX_HINTS,
    PRECISIONS,
    Decoding,
    check_size,
)
from ccc_nodes.interfaces.flags import add_harmonization_flags, harmonization_args
from ccc_nodes.job.video import is_video

__all__ = ["main"]


@dataclass(frozen=True)
class Subcommand:
    """A subcommand that lives beside the code it drives.

    Attributes:
      module: defines ``add_parser(subparsers)``, which registers the full parser and sets
        ``func``; imported only when this command runs (``ccc --help`` imports none, so no torch).
      extra: the extra the command needs beyond the base install (:mod:`ccc_nodes.core.extras` says how to install it).
      help: its line in ``ccc --help``.
    """

    module: str
    extra: str
    help: str


SUBCOMMANDS: dict[str, Subcommand] = {
    "evaluate": Subcommand("ccc_nodes.interfaces.evaluate_command", "eval",
                           "score colorizations against ground truth (MSE ... FID, CNR, CCAR, TAR)"),
    "serve": Subcommand("ccc_nodes.interfaces.server.cli", "server", "run the ComfyUI-compatible server (and node editor)"),
    "export-onnx": Subcommand("ccc_nodes.core.onnx_runtime", "onnx",
                              "export the network to ONNX (for onnxruntime and other runtimes)"),
}

@dataclass(frozen=True)
class Job:
    src: Path
    dst: Path


def _identities(path: Path) -> set:
    """What makes a file the same file: its resolved path and, when it exists, its inode
    (a hard link, a case-insensitive twin or a link on the way are the same file)."""
    found: set = {path.resolve()}
    try:
        st = path.stat()
        found.add((st.st_dev, st.st_ino))
    except OSError:
        pass
    return found


def _through_link(path: Path) -> bool:
    """Whether ``path`` or a folder on its way (below the working folder) is a link."""
    return any(p.is_symlink() for p in (path, *path.parents) if p != Path(p.anchor))


def _folder_inputs(folder: Path, problems: list[tuple[str, str]]) -> list[Path]:
    """The image and video files under ``folder`` (recursive, sorted); sub-folders that cannot be
    read, links to folders (not followed) and dangling links are added to ``problems``."""
    def unreadable(e: OSError) -> None:
        problems.append((e.filename or str(folder), f"folder cannot be read: {(e.strerror or str(e)).lower()}"))

    found = []
    for dirpath, dirnames, filenames in os.walk(folder, onerror=unreadable):
        here = Path(dirpath)
        for d in sorted(dirnames):
            if (here / d).is_symlink():
                problems.append((str(here / d), f"a link to the folder {os.readlink(here / d)}; links to folders "
                                                "are not followed (give the folder itself)"))
        for f in filenames:
            p = here / f
            if p.suffix.lower() not in IMAGE_SUFFIXES and not is_video(p):
                continue
            if p.is_symlink() and not p.exists():
                problems.append((str(p), f"a link to {os.readlink(p)}, which does not exist"))
            elif p.is_file():
                found.append(p)
    return sorted(found)


def collect_jobs(inputs: Sequence[str], outdir: Path) -> tuple[list[Job], list[tuple[str, str]]]:
    """Expand files, folders (recursive) and globs into (source, destination) pairs.

    The one rule of every ``ccc colorize`` run, images, videos and frame folders alike:
    folder inputs keep their sub-folder layout under ``outdir``; files keep their names
    (images as :func:`~ccc_nodes.core.images.output_path` writes them, videos as they are).
    Returns the jobs and a list of (input, problem) for inputs that gave nothing, whose
    output would be written over any input of the run (whatever their order), whose
    output another input already takes (two ``one.png`` or ``clip.mp4`` from different
    folders), or whose output's name is taken by a folder - all found before any work.
    """
    problems: list[tuple[str, str]] = []
    candidates: list[tuple[Path, Path]] = []  # (source, output relative to outdir), in order

    def dangling(f: Path) -> bool:
        if f.is_symlink() and not f.exists():
            problems.append((str(f), f"a link to {os.readlink(f)}, which does not exist"))
            return True
        return False

    for spec in inputs:
        path = Path(spec).expanduser()
        if path.is_dir():
            reported = len(problems)
            files = _folder_inputs(path, problems)
            if not files and len(problems) == reported:
                problems.append((spec, "folder holds no images or videos"))
            for f in files:
                candidates.append((f, Path(path.name) / f.relative_to(path) if len(inputs) > 1 else f.relative_to(path)))
        elif path.is_file():
            candidates.append((path, Path(path.name)))
        elif dangling(path):
            continue
        else:
            reported = len(problems)
            matches = [m for m in sorted(Path(m) for m in glob.glob(str(path), recursive=True))
                       if not dangling(m) and m.is_file()]
            if not matches and len(problems) == reported:
                problems.append((spec, "no such file, folder or matching glob"))
            candidates += [(f, Path(f.name)) for f in matches]
    # One job per file: a link and the file it names (or two links to one file) are the
    # same input, colorized once under the real file's name when it is in the run.
    by_file: dict[Path, list[tuple[Path, Path]]] = {}
    for src, rel in candidates:
        by_file.setdefault(src.resolve(), []).append((src, rel))
    found: list[tuple[Path, Path]] = []
    for same in by_file.values():
        kept = next((c for c in same if not _through_link(c[0])), same[0])
        found.append(kept)
        for src, _ in same:
            if src.absolute() != kept[0].absolute():
                problems.append((str(src), f"the same file as {kept[0]} (through a link); colorized once, as {kept[0]}"))
    sources = set().union(*(_identities(src) for src, _ in found))
    jobs: list[Job] = []
    taken: dict[str, Path] = {}  # output path (case-folded: macOS and Windows) -> its source
    for src, rel in found:
        dst = outdir / rel if is_video(src) else output_path(outdir / rel)
        if _identities(dst) & sources:
            problems.append((str(src), f"output {dst} would overwrite an input; choose another -o"))
            continue
        if dst.is_dir():
            problems.append((str(src), f"output {dst} is a folder; move it, or choose another -o"))
            continue
        other = taken.setdefault(str(dst).casefold(), src)
        if other is not src:
            problems.append((str(src), f"its output {dst} is already taken by {other}; colorize it with another -o"))
            continue
        jobs.append(Job(src, dst))
    return jobs, problems


def cmd_colorize(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from ccc_nodes.job.bulk import OUT_OF_MEMORY

    outdir = Path(args.output)
    if outdir.exists() and not outdir.is_dir():
        print(f"error: -o {outdir} is a file, not a folder", file=sys.stderr)
        return 2
    safe, problems = collect_jobs(args.inputs, outdir)  # never an output over an input
    # Videos are known by the files the inputs name (a folder's, a glob's), not by the words typed.
    sequences = args.temporal == "on" or any(is_video(p) for p in [*args.inputs, *(j.src for j in safe)])
    bulk = bool(args.workers or args.resume or int(os.environ.get("WORLD_SIZE", "1")) > 1)
    if sequences and bulk:
        print("error: videos and --temporal on take one process: drop --workers and --resume, and run without "
              "torchrun", file=sys.stderr)
        return 2
    failures: list[tuple[str, str]] = list(problems)
    if not safe:
        _report(0, failures, what="0 videos and 0 frames" if sequences else None)
        return 1
    try:
        hint_table, reference = _steering_inputs(args)
        harmonization = harmonization_args(args)
    except (ValueError, OSError) as e:  # HintError, ImageError, a bad threshold
        print(f"error: {e}", file=sys.stderr)
        return 2
    if hint_table is not None and args.hints:
        _warn_unmatched(args.hints, hint_table, [_hints_key(j.src, args) for j in safe] + [name for name, _ in problems])
    if args.reference_strength is not None and not args.reference:
        print("error: --reference-strength sets how strongly --reference steers the colours: give --reference too",
              file=sys.stderr)
        return 2
    if harmonization is not None and harmonization.masks == "sam" and not args.sam:
        print("error: --harmonize sam needs --sam CKPT (a .pth file or a Hub repo id); or use --harmonize classical",
              file=sys.stderr)
        return 2
    if (why := _uncreatable(outdir)) is not None:  # made by the first output written: a run that writes none leaves none
        print(f"error: cannot create the output folder {outdir}: {why}", file=sys.stderr)
        return 2
    ranks = None
    if bulk:  # the bulk path
        if hint_table is not None or reference is not None or harmonization is not None:
            print("error: --hint, --hints, --reference and --harmonize take the one-process path: drop --workers and "
                  "--resume, and run without torchrun", file=sys.stderr)
            return 2
        from ccc_nodes.job.bulk import Ranks

        try:
            ranks = Ranks.from_env()
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        args.device = ranks.device(args.device)  # under torchrun each rank its own GPU
    if sequences and any(is_video(j.src) for j in safe):
        from ccc_nodes.job.video import VideoError, require_av

        try:
            require_av()
        except VideoError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    colorizer = _colorizer(args)
    if colorizer is None:
        return 2
    if ranks is not None:
        return _colorize_bulk(args, colorizer, safe, failures, outdir, ranks)
    job = _job(args, colorizer, reference, harmonization)
    if job is None:
        return 2
    if sequences:
        return _colorize_sequences(args, colorizer, safe, failures, outdir, hint_table, job)
    done = 0
    bar = tqdm(total=len(safe), desc="colorize", unit="img", disable=args.quiet)
    for start in range(0, len(safe), args.batch):
        loaded: list[tuple[Job, object]] = []
        for one in safe[start : start + args.batch]:
            try:
                loaded.append((one, open_image(one.src, args.max_pixels)))
            except ImageError as e:
                failures.append((str(one.src), str(e).removeprefix(f"{one.src}: ")))
                bar.update(1)
            except MemoryError:
                failures.append((str(one.src), OUT_OF_MEMORY))
                bar.update(1)
        if not loaded:
            continue
        try:
            outs = colorizer.colorize([im for _, im in loaded], hints=[_job_hints(hint_table, j.src) for j, _ in loaded],
                                      **job)
        except (ValueError, RuntimeError, MemoryError):  # e.g. out of memory on a big batch, a bad hint: one by one
            outs = []
            for one, im in loaded:
                try:
                    outs.append(colorizer.colorize(im, hints=_job_hints(hint_table, one.src), **job))
                except (ValueError, RuntimeError, MemoryError) as e:
                    outs.append(e)
        for (one, _), out in zip(loaded, outs, strict=True):
            if isinstance(out, MemoryError):
                failures.append((str(one.src), OUT_OF_MEMORY))
            elif isinstance(out, Exception):
                failures.append((str(one.src), f"colorization failed: {out}"))
            else:
                try:
                    save_image(out, one.dst)
                    done += 1
                except OSError as e:
                    failures.append((str(one.src), f"could not write {one.dst}: {e}"))
                except MemoryError:
                    failures.append((str(one.src), OUT_OF_MEMORY))
            bar.update(1)
        del loaded, outs  # free this batch before the next one
    bar.close()
    _report(done, failures, outdir)
    return 1 if failures else 0


def _colorize_bulk(args: argparse.Namespace, colorizer, jobs: list[Job], failures: list[tuple[str, str]],
                   outdir: Path, ranks) -> int:
    """--workers, --resume or torchrun: the core's bulk path (:mod:`ccc_nodes.job.bulk`); rank 0 reports for all."""
    from ccc_nodes.job.bulk import colorize_files

    try:
        report = colorize_files(colorizer, [(j.src, j.dst) for j in jobs], save_image, workers=args.workers,
                                resume=args.resume, progress=not args.quiet, ranks=ranks)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        ranks.close()
    if ranks.main:
        if report.kept:
            print(f"kept {report.kept} output{'s' if report.kept != 1 else ''} already written whole (--resume)",
                  file=sys.stderr)
        if ranks.world > 1:
            print(f"{ranks.world} ranks wrote {' + '.join(map(str, report.per_rank))} images", file=sys.stderr)
        _report(report.done, failures + report.failures, outdir)
    return 1 if failures or report.failures else 0


def _steering_inputs(args: argparse.Namespace) -> tuple[dict | None, object]:
    """``--hint``, ``--hints`` and ``--reference`` read up front, so a typo or too many hints
    for an input fail before any work."""
    if not (args.hint or args.hints or args.reference):
        return None, None
    from ccc_nodes.steps.hints import hint_table, read_reference

    table = hint_table(args.hints, args.hint or ())
    return table, read_reference(args.reference) if args.reference else None


def _warn_unmatched(path: str, table: dict, inputs: Sequence) -> None:
    """One warning line naming the entries of ``--hints`` under which no input is filed:
    a typo or a file of another run, whose hints would otherwise go unused in silence
    (a warning, not an error, so one hints file can serve runs on parts of a collection)."""
    from ccc_nodes.steps.hints import unmatched_names

    names = unmatched_names(table, inputs)
    if names:
        shown = ", ".join(map(repr, names[:5])) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        print(f"warning: {path} names {len(names)} file{'s' if len(names) != 1 else ''} that no input matches, "
              f"whose hints are not used: {shown}", file=sys.stderr)


def _job_hints(table: dict | None, path: Path) -> list:
    if table is None:
        return []
    from ccc_nodes.steps.hints import hints_for

    return hints_for(table, path)


def _hints_key(src: Path, args: argparse.Namespace) -> Path:
    """Where an input's hints are filed: a video and an image under their own name, a frame of a
    ``--temporal on`` folder under its folder's (the folder is one clip)."""
    return src.parent if args.temporal == "on" and not is_video(src) else src


def _colorizer(args: argparse.Namespace):
    """The ``Colorizer`` the flags ask for, or None after an error line."""
    from ccc_nodes.core.hub import ModelLoadError
    from ccc_nodes.core.onnx_runtime import open_model
    from ccc_nodes.job.colorizer import Colorizer

    try:
        model = open_model(args.model, args.runtime, revision=args.revision)
        return Colorizer(model, device=args.device, size=args.size, precision=args.precision,
                         decoding=args.decode, batch_size=args.batch, max_pixels=args.max_pixels,
                         revision=args.revision)
    except (ModelLoadError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return None


def _job(args: argparse.Namespace, colorizer, reference, harmonization) -> dict | None:
    """The job's settings shared by every input (the reference's palette, harmonisation and its
    SAM), or None after an error line."""
    job: dict = {"harmonization": harmonization}
    if harmonization is not None and harmonization.masks == "sam":
        from ccc_nodes.steps.masks import SamLoadError, load_sam

        try:
            job["sam"] = load_sam(args.sam, model_type=args.sam_type, device=colorizer.device)
        except SamLoadError as e:
            print(f"error: {e}", file=sys.stderr)
            return None
    if reference is not None:
        from ccc_nodes.steps.hints import palette_prior

        given = {} if args.reference_strength is None else {"strength": args.reference_strength}
        try:
            job["reference"] = palette_prior(reference, colorizer.classes, **given)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return None
    return job


def _colorize_sequences(args: argparse.Namespace, colorizer, jobs: list[Job], failures: list[tuple[str, str]],
                        outdir: Path, hint_table: dict | None, job: dict) -> int:
    """Videos, and (``--temporal on``) folders as sequences of numbered frames: the core's
    :func:`~ccc_nodes.job.video.colorize_sequences`, each frame through the same job as a photo."""
    from ccc_nodes.job.video import VideoError, colorize_sequences

    try:
        n_videos, n_frames, failed = colorize_sequences(
            colorizer, [(j.src, j.dst) for j in jobs if is_video(j.src)],
            [(j.src, j.dst) for j in jobs if not is_video(j.src)], save_image,
            temporal=args.temporal != "off", quiet=args.quiet, max_pixels=args.max_pixels,
            per_folder=args.temporal == "on",  # beside videos, images are colorized one by one
            hints_for=lambda path: _job_hints(hint_table, path), **job)
    except (VideoError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    failures += failed
    _report(n_videos + n_frames, failures, outdir,
            f"{n_videos} video{'s' if n_videos != 1 else ''} and {n_frames} frame{'s' if n_frames != 1 else ''}")
    return 1 if failures or not (n_videos or n_frames) else 0


def _report(done: int, failures: list[tuple[str, str]], outdir: Path | None = None, what: str | None = None) -> None:
    """The summary line, then one line per input left out, in the same words."""
    what = what or f"{done} image{'s' if done != 1 else ''}"
    where = f" into {outdir}" if outdir is not None and done else ""
    print(f"colorized {what}{where}; {len(failures)} skipped", file=sys.stderr)
    for name, why in failures:
        print(f"  skipped {name}: {why}", file=sys.stderr)


def _uncreatable(folder: Path) -> str | None:
    """Why ``folder`` could not be made, found without making it; None if it can be."""
    existing = folder.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``ccc`` parser. Only the subcommand ``argv`` names (if any) gets its full parser,
    importing its module; the others are listed by name and help line."""
    p = argparse.ArgumentParser(prog="ccc", description="CCC++ colour-classified colorization")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("colorize", help="colorize image files, folders or globs",
                       description="Colorize images. Outputs keep their names under OUTDIR; inputs are never overwritten.")
    c.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders (recursive) or globs")
    c.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="folder for the colorized images")
    c.add_argument("--model", default=None,
                   help="Hub repo id, model folder or .onnx file (default: the embedded model)")
    c.add_argument("--runtime", choices=("torch", "onnx"), default=None,
                   help="torch, or onnx: an .onnx --model made by `ccc export-onnx`, run by onnxruntime on the CPU "
                        "(default: onnx for an .onnx file, else torch)")
    c.add_argument("--revision", default=None, help="Hub branch, tag or commit")
    c.add_argument("--size", type=int, default=INPUT_SIZE,
                   help=f"network input size, a multiple of 32 (default {INPUT_SIZE})")
    c.add_argument("--batch", type=int, default=8, help="images per forward pass (default 8)")
    c.add_argument("--device", default="auto", help="auto (CUDA > MPS > CPU), cpu, cuda, cuda:N, mps")
    c.add_argument("--precision", default=PRECISIONS[0], choices=PRECISIONS,
                   help="auto: bf16 (else fp16) on a CUDA GPU, fp16 on MPS, fp32 on the CPU")
    c.add_argument("--decode", default=Decoding().mode, choices=DECODE_MODES,
                   help=f"how classes become a*b* (default {Decoding().mode})")
    c.add_argument("--max-pixels", type=int, default=MAX_PIXELS, help=f"refuse larger images (default {MAX_PIXELS:,})")
    c.add_argument("--hint", action="append", metavar="X,Y,#RRGGBB[,S]",
                   help="a colour hint: the object under pixel (X, Y) takes the colour, with strength S in 0..1 "
                        f"(default 1); repeat for more (at most {MAX_HINTS} per image, --hints included)")
    c.add_argument("--hints", metavar="FILE.json", help="hints for batch work: a list for every input, or an object "
                                                        f"of file name -> list, at most {MAX_HINTS} per image; names "
                                                        "no input matches are reported (README, Colour hints)")
    c.add_argument("--reference", metavar="IMAGE|#RGB,...", help="a reference image or palette whose colours "
                                                                "steer every input")
    c.add_argument("--reference-strength", type=float, default=None, metavar="S",
                   help="weight of the reference's palette, 0..4 (default: the core's, HINT_DEFAULTS)")
    c.add_argument("--temporal", choices=("on", "off"), default=None,
                   help="videos: carry colours along the motion (on, the default) or colorize frame by frame (off); "
                        "on also makes each input folder one sequence of numbered frames")
    add_harmonization_flags(c, "make each object's colour consistent with object masks (METHOD.md s. 9)")
    c.add_argument("--workers", type=int, default=0, metavar="N",
                   help="the bulk path: N reader processes and writer threads beside the network (0: off)")
    c.add_argument("--resume", action="store_true",
                   help="skip outputs already written whole (checked by size and decoding), redo the rest")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    c.set_defaults(func=cmd_colorize)
    chosen = _command(argv)
    for name, command in SUBCOMMANDS.items():
        if name == chosen:
            importlib.import_module(command.module).add_parser(sub)
        else:
            sub.add_parser(name, help=command.help, add_help=False)
    return p


def _command(argv: Sequence[str] | None) -> str | None:
    """The subcommand ``argv`` names: its first word that is not an option."""
    return next((a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-")), None)


def _missing_extra(e: ModuleNotFoundError, command: str | None) -> str | None:
    """One line for a module of an extra that is not installed, or None for any other import failure."""
    top = (e.name or "").partition(".")[0]
    if not top or top == __package__:
        return None
    return f"error: {missing_module(e, f'ccc {command}', SUBCOMMANDS[command].extra if command in SUBCOMMANDS else None)}"


def main(argv: Sequence[str] | None = None) -> int:
    from ccc_nodes.core.signals import stop_on_signals

    # SIGTERM (a service stop, `timeout`) unwinds like Ctrl-C does: every ``finally`` runs and
    # removes its temporary output, instead of the process dying with a .part file left.
    try:
        with stop_on_signals():
            return _run(argv)
    except KeyboardInterrupt as e:  # Ctrl-C, or a Stopped by SIGINT / SIGTERM
        print("\ninterrupted: outputs already finished are kept; nothing half-written is left", file=sys.stderr)
        return getattr(e, "code", 130)
    except ModuleNotFoundError as e:  # an extra the command needs is not installed
        line = _missing_extra(e, _command(argv))
        if line is None:
            raise
        print(line, file=sys.stderr)
        return 2


# Options whose value may start with "-" (a hint at x = -5 is refused in words, not by argparse
# as "expected one argument").
_DASHED_VALUES = ("--hint",)


def _join_dashed_values(argv: Sequence[str]) -> list[str]:
    """``--hint -5,10,red`` -> ``--hint=-5,10,red``: argparse takes a value that starts with
    "-" and a digit (and is no plain number) for an option."""
    out = list(argv)
    for i in range(len(out) - 2, -1, -1):
        if out[i] in _DASHED_VALUES and re.match(r"-[\d.]", out[i + 1]):
            out[i : i + 2] = [f"{out[i]}={out[i + 1]}"]
    return out


def _run(argv: Sequence[str] | None) -> int:
    argv = _join_dashed_values(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    if args.command == "colorize":
        try:
            check_size(args.size, "--size")
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    if args.command == "colorize" and args.batch < 1:
        print("error: --batch must be >= 1", file=sys.stderr)
        return 2
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
