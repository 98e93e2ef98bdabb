"""Ask a policy for a chunk at dataset frames and line its answers up with the dataset's own actions.

Why one module: the oracle, the doctor's reconstruction error (and later the rerun view) all need the same
steps -- match the policy's joint names to the dataset's, turn a frame into an observation in the policy's
order, send it, put the chunk back into the dataset's order next to the next H dataset actions -- and two
copies of that would drift. Statistics over the collected chunks live in `oracle_stats`.

Ground truth past an episode's end is padded with its last action (`Episode.action_chunk`, as the dataset
policy pads); each frame keeps how many of its rows are real so the statistics can exclude the padding.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from policy_norm.joint_names import NAME_MAP_FLAG, name_map_hint
from replay.oracle.norm import NormalizedView
from replay.oracle.sources import ChunkSource, FrameObservation
from robodata.dataset import Dataset, DatasetError, DatasetInfo, Episode

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


class OracleError(RuntimeError):
    """The comparison cannot run (names that do not match, no frame answered); the message says why."""


@dataclass(frozen=True)
class NameMatch:
    """How one feature's dims line up between the policy and the dataset.

    to_policy[i]: the dataset dim holding the policy's dim i; to_dataset[k]: the policy dim holding the
    dataset's dim k. positional: the names differ and the dims were matched by position (only where the
    caller allows it)."""

    to_policy: tuple[int, ...]
    to_dataset: tuple[int, ...]
    positional: bool = False


def match_names(what: str, policy: Sequence[str], dataset: Sequence[str],
                allow_positional: bool = False) -> NameMatch:
    """Match the policy's names to the dataset's, by name. Raises OracleError listing the mismatches, unless
    `allow_positional` and the dims agree (generic names such as action_0 on one side)."""
    if sorted(policy) == sorted(dataset) and len(set(policy)) == len(policy):
        return NameMatch(tuple(list(dataset).index(n) for n in policy),
                         tuple(list(policy).index(n) for n in dataset))
    if allow_positional and len(policy) == len(dataset):
        same = tuple(range(len(policy)))
        return NameMatch(same, same, positional=True)
    missing = [n for n in dataset if n not in policy]
    extra = [n for n in policy if n not in dataset]
    hint = name_map_hint(policy, dataset, other="dataset", flag=NAME_MAP_FLAG)
    raise OracleError(f"{what} names differ: the policy has {len(policy)} ({list(policy)}), the dataset "
                      f"{len(dataset)} ({list(dataset)}); missing from the policy: {missing}, not in the dataset: "
                      f"{extra}{f'; {hint}' if hint else ''}")


@dataclass(frozen=True)
class Alignment:
    """The policy's state/action dims against the dataset's, and the policy's cameras the dataset lacks."""

    state: NameMatch
    action: NameMatch
    missing_cameras: tuple[str, ...]


def align(source: ChunkSource, info: DatasetInfo, allow_positional: bool = False) -> Alignment:
    """Check the policy's state/action names against the dataset's (raises OracleError naming the mismatches)."""
    state = match_names("state", source.state_names, info.state_names, allow_positional)
    action = match_names("action", source.action_names, info.action_names, allow_positional)
    missing = tuple(c for c in source.cameras if c not in info.camera_names)
    return Alignment(state, action, missing)


def thin(picks: Sequence[tuple[int, int]], max_frames: int | None) -> list[tuple[int, int]]:
    """Evenly thinned to `max_frames` (None: all), so every episode stays covered."""
    if max_frames is None or len(picks) <= max_frames:
        return list(picks)
    keep = np.unique(np.linspace(0, len(picks) - 1, max(max_frames, 1)).round().astype(int))
    return [picks[int(i)] for i in keep]


def sample_dataset_frames(ds: Dataset, stride: int, max_frames: int | None,
                          episodes: Sequence[int] | None = None) -> list[tuple[int, int]]:
    """Every `stride`-th frame of every readable episode (or of `episodes`; lengths from the metadata), thinned
    to `max_frames`."""
    indices = ds.episode_indices() if episodes is None else sorted(set(episodes))
    picks = [(i, t) for i in indices for t in range(0, ds.episode_meta(i).length, max(stride, 1))]
    return thin(picks, max_frames)


@dataclass(frozen=True)
class ChunkPair:
    """One frame's predicted and ground-truth chunks [H, A] (dataset action order, robot units) and how many
    ground-truth rows are real (the rest repeat the episode's last action)."""

    episode: int
    frame: int
    predicted: F32
    truth: F32
    valid: int


@dataclass
class Collected:
    """What came back, frame by frame (dataset order): the inputs of the statistics."""

    action_names: tuple[str, ...]
    state_names: tuple[str, ...]
    sampled: int = 0
    located: list[tuple[int, int]] = field(default_factory=list)
    predicted: list[F32] = field(default_factory=list)
    truth: list[F32] = field(default_factory=list)
    valid: list[int] = field(default_factory=list)
    states: list[F32] = field(default_factory=list)
    norm_error: list[F64] = field(default_factory=list)  # [H, A] per frame, NaN where encoding failed
    failures: list[str] = field(default_factory=list)
    warnings: Counter[str] = field(default_factory=Counter)
    norm_failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def observation(ep: Episode, t: int, state_order: Sequence[int]) -> FrameObservation:
    """Frame t of `ep` as the policy's observation (its state order; every dataset camera's image)."""
    frame = ep.frame(t, with_images=bool(ep.camera_names))
    return FrameObservation(ep.index, t, frame.timestamp, np.asarray(frame.state, np.float32)[list(state_order)],
                            frame.task, frame.images)


def _norm_error(view: NormalizedView, alignment: Alignment, chunk: F32, truth: F32, state: F32) -> F64:
    """[H, A] normalized prediction minus normalized truth, in the dataset's action order."""
    truth_policy = truth[:, list(alignment.action.to_policy)]
    diff = view.encode(chunk, state) - view.encode(truth_policy, state)
    return np.asarray(diff[:, list(alignment.action.to_dataset)], dtype=np.float64)


def collect(ds: Dataset, source: ChunkSource, alignment: Alignment, picks: Sequence[tuple[int, int]], *,
            view: NormalizedView | None = None, batch_size: int = 16,
            progress: Callable[[int], object] | None = None) -> Collected:
    """Ask `source` at each (episode, frame) of `picks`, `batch_size` observations per `infer_batch` call;
    `progress(n)` is called after every n frames (a progress bar's update)."""
    info = ds.info
    out = Collected(info.action_names, info.state_names, sampled=len(picks))
    if view is not None and (view.state_names != source.state_names or view.action_names != source.action_names):
        out.notes.append("the normalized view's joint order differs from the policy's: raw units only")
        view = None
    by_episode: dict[int, list[int]] = {}
    for e, t in picks:
        by_episode.setdefault(e, []).append(t)
    step = max(batch_size, 1)
    for e, frames in by_episode.items():
        try:
            ep = ds.episode(e)
        except DatasetError as err:
            out.failures += [f"episode {e}: {err}"] * len(frames)
            if progress is not None:
                progress(len(frames))
            continue
        for start in range(0, len(frames), step):
            batch = frames[start : start + step]
            _ask(ep, batch, source, alignment, view, out)
            if progress is not None:
                progress(len(batch))
    return out


def _ask(ep: Episode, frames: Sequence[int], source: ChunkSource, alignment: Alignment,
         view: NormalizedView | None, out: Collected) -> None:
    observations: list[FrameObservation] = []
    asked: list[int] = []
    for t in frames:
        try:
            observations.append(observation(ep, t, alignment.state.to_policy))
            asked.append(t)
        except Exception as err:  # an unreadable frame is reported for that frame, the sweep goes on
            out.failures.append(f"episode {ep.index} frame {t}: {type(err).__name__}: {err}")
    if not observations:
        return
    answers = source.infer_batch(observations)
    for t, obs, answer in zip(asked, observations, answers, strict=True):
        if answer.chunk is None:
            out.failures.append(f"episode {ep.index} frame {t}: {answer.error}")
            continue
        out.warnings.update(answer.warnings)
        chunk = answer.chunk
        horizon = len(out.predicted[0]) if out.predicted else None
        width = len(alignment.action.to_dataset)
        if chunk.ndim != 2 or chunk.shape[1] != width or (horizon and len(chunk) != horizon):
            out.failures.append(f"episode {ep.index} frame {t}: chunk of shape {list(chunk.shape)}")
            continue
        truth, valid = ep.action_chunk(t, chunk.shape[0])
        out.located.append((ep.index, t))
        out.predicted.append(np.asarray(chunk[:, list(alignment.action.to_dataset)], dtype=np.float32))
        out.truth.append(np.asarray(truth, dtype=np.float32))
        out.valid.append(valid)
        out.states.append(np.asarray(ep.states[t], dtype=np.float32))
        if view is not None:
            try:
                out.norm_error.append(_norm_error(view, alignment, chunk, truth, obs.state))
            except Exception as err:  # e.g. a non-finite prediction: reported, its normalized error left out
                out.norm_failures.append(f"episode {ep.index} frame {t}: {type(err).__name__}: {err}")
                out.norm_error.append(np.full(chunk.shape, np.nan))


def frame_chunks(ds: Dataset, source: ChunkSource, episode: int, frame: int,
                 allow_positional: bool = False) -> ChunkPair:
    """The policy's chunk at one dataset frame next to the dataset's own next H actions (for frame-by-frame
    views); raises OracleError when the names do not match or the policy refuses the frame."""
    alignment = align(source, ds.info, allow_positional)
    ep = ds.episode(episode)
    (answer,) = source.infer_batch([observation(ep, frame, alignment.state.to_policy)])
    if answer.chunk is None:
        raise OracleError(f"episode {episode} frame {frame}: {answer.error}")
    truth, valid = ep.action_chunk(frame, answer.chunk.shape[0])
    predicted = np.asarray(answer.chunk[:, list(alignment.action.to_dataset)], dtype=np.float32)
    return ChunkPair(episode, frame, predicted, truth, valid)
