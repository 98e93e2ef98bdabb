"""Command line: `python -m policy_server serve ...`, `... config ...` and `... convert ...` (openpi JAX steps).

An entry module on the top floor (like `robot_client.run_cli`): `config` and `serve --robot-config` read the
robot config with the robot client's own loader (`robot_client.config`, imported only when a robot config is
given) and hand the rest of `policy_server` the robot's names as data (`RobotFacts`), so nothing below this
module imports the robot client and the robot config keeps one parser. Why, in `policy_server.config_draft`.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from policy_norm.joint_names import joint_name_mismatch
from policy_server.admission import AdmissionLimits
from policy_server.auth import TOKEN_ENV, load_token
from policy_server.batching import BatchingConfig
from policy_server.checkpoint.openpi_convert import (
    ConvertOptions,
    convert_openpi_step,
    ensure_converted,
    is_orbax_step,
)
from policy_server.config_draft import RobotFacts, draft_policy_config, write_draft
from policy_server.log_redaction import install_redaction
from policy_server.policy import Policy
from policy_server.policy_config import FILE_NAME, Pi05PolicyConfig, PolicyConfigError
from policy_server.policy_types import PolicyRequest, PolicyType, get_policy_type, policy_type_names
from policy_server.server import DEFAULT_MAX_REQUEST_BYTES, PolicyServer, ServerConfig, TlsConfig

log = logging.getLogger("policy_server")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m policy_server", description="VLA policy server (gRPC).")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve a policy over gRPC (and optionally openpi's websocket protocol)")
    src = serve.add_argument_group("policy")
    src.add_argument("--checkpoint", type=Path,
                     help="Pi0.5 checkpoint directory (openpi or LeRobot layout, with policy_config.json)")
    src.add_argument("--policy", choices=policy_type_names(), default=None,
                     help="; ".join(f"'{name}': {get_policy_type(name).help}" for name in policy_type_names()))
    src.add_argument("--dataset", type=Path,
                     help="dataset for --policy dataset; with --checkpoint, checked against the checkpoint's "
                          "norm stats before serving")
    src.add_argument("--horizon", type=int, default=50, help="dataset policy: action chunk length H (default 50)")
    src.add_argument("--images-optional", action="store_true",
                     help="dataset policy: accept observations without camera images")
    src.add_argument("--robot-config", metavar="NAME_OR_PATH",
                     help="refuse to serve unless the policy's state and action names are this robot config's joint "
                          "names in its order (a bundled name such as bimanual_yam, or a TOML path)")
    model = serve.add_argument_group("pi05 model")
    model.add_argument("--policy-config", type=Path, help="policy config JSON (default: CHECKPOINT/policy_config.json)")
    model.add_argument("--tokenizer", type=Path, help="PaliGemma SentencePiece model (default: from the checkpoint)")
    model.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    model.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                       help="weights dtype policy (auto: bfloat16 on CUDA, float32 on CPU)")
    model.add_argument("--asset-id", help="openpi assets/<asset_id> holding norm_stats.json, when several exist")
    model.add_argument("--no-warmup", action="store_true", help="skip the warm-up inference at start")
    model.add_argument("--attention", default="sdpa", choices=["sdpa", "eager"],
                       help="attention kernel: sdpa = torch's fused scaled_dot_product_attention (default), eager = "
                            "the reference formula op by op")
    model.add_argument("--flow-capture", default="auto", choices=["auto", "none", "compile", "cuda_graph"],
                       help="run the flow loop captured, made per batch size at start: cuda_graph (CUDA), compile "
                            "(torch.compile; tens of seconds per batch size on CPU), none; auto = cuda_graph on CUDA, "
                            "none on CPU")
    model.add_argument("--compile-prefix", action="store_true",
                       help="also torch.compile the prefix pass (pays on CPU for small models)")
    model.add_argument("--convert-cache", type=Path, default=None,
                       help="--checkpoint RUN/STEP of openpi JAX training (orbax params/): where its conversion is "
                            "kept, keyed by the params' content hash (default $POLICY_SERVER_CONVERT_CACHE, else "
                            "$XDG_CACHE_HOME or ~/.cache, /yam-vla-deploy/converted)")
    model.add_argument("--no-convert", action="store_true",
                       help="refuse an openpi JAX checkpoint that is not converted yet (prints the convert command)")
    model.add_argument("--allow-stats-mismatch", action="store_true",
                       help="serve even if --dataset is clearly not normalized by the checkpoint's stats")
    batch = serve.add_argument_group("batching (several clients sharing one server)")
    batch.add_argument("--max-batch", type=int, default=None,
                       help="run up to N concurrent requests in one model call; 1 = off (default: "
                            f"{BatchingConfig.max_batch} for pi05 on CUDA; off on CPU, where a batch costs as much as "
                            "its requests one by one, and for the dataset policy, which has no model)")
    batch.add_argument("--batch-wait-ms", type=float, default=BatchingConfig.max_wait_ms,
                       help="after a request arrives, wait up to this long for others to join its batch "
                            f"(default {BatchingConfig.max_wait_ms:g}; a lone client pays it per request)")
    net = serve.add_argument_group("network")
    net.add_argument("--host", default="127.0.0.1",
                     help="address to bind (default 127.0.0.1 = loopback only; 0.0.0.0 exposes it to the network)")
    net.add_argument("--port", type=int, default=50051, help="gRPC port (default 50051)")
    net.add_argument("--websocket-port", type=int, default=None,
                     help="also speak openpi's websocket protocol on this port")
    net.add_argument("--replica-name", default=None,
                     help="name stamped on every response, to tell replicas apart (default <hostname>:<port>)")
    net.add_argument("--max-request-mb", type=float, default=DEFAULT_MAX_REQUEST_BYTES / 2**20,
                     help="largest accepted request in MiB (default 32)")
    net.add_argument("--max-streams", type=int, default=AdmissionLimits.max_streams,
                     help="open InferStreams the server holds in total (one per connected robot); more are refused "
                          f"with RESOURCE_EXHAUSTED (default {AdmissionLimits.max_streams})")
    net.add_argument("--max-streams-per-client", type=int, default=AdmissionLimits.max_streams_per_client,
                     help="open InferStreams per client (its bearer token with --token-file, else its IP address); "
                          "more are refused with RESOURCE_EXHAUSTED "
                          f"(default {AdmissionLimits.max_streams_per_client})")
    net.add_argument("--tls-cert", type=Path, help="PEM certificate chain (enables TLS)")
    net.add_argument("--tls-key", type=Path, help="PEM private key for --tls-cert")
    net.add_argument("--tls-client-ca", type=Path, help="require client certificates signed by this CA")
    net.add_argument("--token-file", type=Path,
                     help=f"require 'authorization: Bearer <token>' with the token in this file (or set ${TOKEN_ENV})")
    serve.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    draft = sub.add_parser("config", help="draft a checkpoint's policy_config.json from the checkpoint, the robot "
                                          "config and the training dataset; exit 0 = all inferred, 1 = some values "
                                          "must be confirmed (the draft is written anyway), 2 = error")
    draft.add_argument("--checkpoint", type=Path, required=True, help="Pi0.5 checkpoint directory (either layout)")
    draft.add_argument("--robot-config", required=True, metavar="NAME_OR_PATH",
                       help="robot config: a bundled name (bimanual_yam) or a TOML path")
    draft.add_argument("--dataset", type=Path,
                       help="the training dataset: joint names, cameras, fps, and the delta mask its actions show")
    draft.add_argument("--asset-id", help="openpi assets/<asset_id> holding norm_stats.json, when several exist")
    draft.add_argument("--out", type=Path, help=f"where to write the draft (default CHECKPOINT/{FILE_NAME})")
    draft.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    convert = sub.add_parser("convert", help="convert an openpi JAX training step (orbax params/ + assets/) into a "
                                             "servable checkpoint directory, without JAX")
    convert.add_argument("--openpi-params", type=Path, required=True, metavar="RUN/STEP",
                         help="the step directory openpi training wrote (holding params/ and assets/)")
    convert.add_argument("--out", type=Path, required=True, help="output directory (must not exist)")
    convert.add_argument("--asset-id", help="assets/<asset_id> whose norm_stats.json to carry, when several exist")
    convert.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                         help="stored dtype; bfloat16 keeps openpi's float32 parts (norms, adaRMS dense, patch and "
                              "position embeddings, action/time projections) in float32 (default float32)")
    convert.add_argument("--no-norm-stats", action="store_true",
                         help="convert even though the step has no assets/<asset_id>/norm_stats.json")
    convert.add_argument("--tokenizer", type=Path,
                         help="PaliGemma SentencePiece model to carry (default: one in the step, else openpi's cache "
                              "$OPENPI_DATA_HOME/big_vision/paligemma_tokenizer.model)")
    convert.add_argument("--action-horizon", type=int, default=50,
                         help="the training config's action_horizon (not recorded in the weights; default 50)")
    convert.add_argument("--max-token-len", type=int, default=200,
                         help="the training config's max_token_len (not recorded in the weights; default 200)")
    convert.add_argument("--robot-config", metavar="NAME_OR_PATH", default="bimanual_yam",
                         help="robot config the policy_config.json draft is made for (default bimanual_yam)")
    convert.add_argument("--dataset", type=Path, help="the training dataset, for the policy_config.json draft")
    return parser


def convert_options(args: argparse.Namespace) -> ConvertOptions:
    return ConvertOptions(dtype=args.dtype, asset_id=args.asset_id, allow_no_norm_stats=args.no_norm_stats,
                          action_horizon=args.action_horizon, max_token_len=args.max_token_len,
                          tokenizer=args.tokenizer)


def convert(args: argparse.Namespace) -> int:
    """`convert`: 0 = converted and the policy_config.json draft needs nothing confirmed, 1 = converted with
    values to confirm (listed), 2 = error (nothing written)."""
    try:
        report = convert_openpi_step(args.openpi_params, args.out, convert_options(args))
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report.text())
    confirm = len(report.to_confirm)
    try:
        robot = load_robot_facts(args.robot_config)
        draft = draft_policy_config(args.out, robot, dataset=args.dataset, asset_id=report.asset_id)
        write_draft(draft, args.out / FILE_NAME)
        print(f"\npolicy_config.json draft for {robot.name}:\n{draft.report()}")
        confirm += len(draft.to_confirm)
    except (ValueError, OSError) as exc:
        print(f"\npolicy_config.json not drafted ({exc}); write it with: python -m policy_server config "
              f"--checkpoint {args.out} --robot-config NAME_OR_PATH [--dataset TRAINING_DATASET]")
        confirm += 1
    print(f"\nwrote {args.out}" + (f" ({confirm} value(s) to confirm)" if confirm else ""))
    return 1 if confirm else 0


def resolve_openpi_checkpoint(args: argparse.Namespace) -> None:
    """`serve --checkpoint RUN/STEP` of openpi JAX training: serve its conversion (from the cache, or converted
    into it now), with the step's policy_config.json unless --policy-config names one."""
    step = args.checkpoint
    if step is None or not is_orbax_step(step):
        return
    if args.policy_config is None:
        candidates = [step / FILE_NAME, step.parent / FILE_NAME] if step.name == "params" else [step / FILE_NAME]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise PolicyConfigError(
                f"{step} is an openpi JAX checkpoint without {FILE_NAME}: pass --policy-config FILE, or convert it "
                f"(python -m policy_server convert --openpi-params {step} --out DIR drafts one) and serve DIR")
        args.policy_config = found
    # The chunk length shapes the flow (action tokens attend to each other) and the weights do not record it: the
    # policy config's, which `convert` drafts from the converted config.json, else openpi's Pi0.5 default.
    horizon = Pi05PolicyConfig.load(args.policy_config).normalization.action_horizon or ConvertOptions.action_horizon
    options = ConvertOptions(dtype="bfloat16" if args.dtype == "bfloat16" else "float32", asset_id=args.asset_id,
                             action_horizon=horizon)
    directory, report = ensure_converted(step, options, cache_root=args.convert_cache,
                                         allow_convert=not args.no_convert)
    if report is None:
        log.info("openpi JAX checkpoint %s: using its conversion %s", step, directory)
    else:
        log.info("openpi JAX checkpoint %s converted:\n%s", step, report.text())
    args.checkpoint = directory


def load_robot_facts(name_or_path: str) -> RobotFacts:
    """The robot config's names, grippers, cameras, rate and position limits, read by the robot client's loader."""
    from robot_client.config import load_robot_config

    config = load_robot_config(name_or_path)
    return RobotFacts(
        name=config.name, source=config.source, joint_names=config.joint_names,
        gripper_names=tuple(arm.gripper for arm in config.arms), camera_names=tuple(c.name for c in config.cameras),
        rate_hz=config.servo_hz, position_limits={n: (lim.lower, lim.upper) for n, lim in config.limits.items()},
    )


def check_robot_names(robot: RobotFacts, state_names: tuple[str, ...], action_names: tuple[str, ...],
                      policy_where: str) -> None:
    """Refuse a policy whose state/action names are not the robot's joint names in order (the comparison the
    robot client runs at connect), naming the first mismatch."""
    for what, names in (("state", state_names), ("action", action_names)):
        problem = joint_name_mismatch(robot.joint_names, names, what)
        if problem is not None:
            raise PolicyConfigError(f"--robot-config {robot.source}: {policy_where}: {problem}")


def draft_config(args: argparse.Namespace) -> int:
    """`config`: print the draft's report, write it; 0 = all inferred, 1 = something to confirm, 2 = error."""
    out = args.out or args.checkpoint / FILE_NAME
    try:
        if out.exists() and not args.force:
            raise FileExistsError(f"{out} exists; pass --force to overwrite it (or --out FILE)")
        robot = load_robot_facts(args.robot_config)
        draft = draft_policy_config(args.checkpoint, robot, dataset=args.dataset, asset_id=args.asset_id)
        print(draft.report())
        write_draft(draft, out, force=args.force)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    confirm = len(draft.to_confirm)
    print(f"\nwrote {out}" + (f" ({confirm} value(s) to confirm)" if confirm else ""))
    return 1 if confirm else 0


def build_policy(args: argparse.Namespace) -> Policy:
    kind = policy_type(args)
    request = policy_request(args)
    missing = kind.missing_argument(request)
    if missing is not None:
        raise SystemExit(f"--policy {kind.name} needs {missing}")
    return kind.build(request)


def policy_request(args: argparse.Namespace) -> PolicyRequest:
    """The `serve` arguments a policy is built from."""
    return PolicyRequest(
        checkpoint=args.checkpoint, dataset=args.dataset, policy_config=args.policy_config,
        tokenizer=args.tokenizer, device=args.device, dtype=args.dtype, asset_id=args.asset_id,
        warmup=not args.no_warmup, allow_stats_mismatch=args.allow_stats_mismatch, horizon=args.horizon,
        require_images=not args.images_optional, attention=args.attention, flow_capture=args.flow_capture,
        compile_prefix=args.compile_prefix, warmup_max_batch=_warmup_max_batch(args),
    )


def _warmup_max_batch(args: argparse.Namespace) -> int:
    """The largest batch the server will run: captured flow loops are made for batch sizes up to it at start."""
    batching = build_batching(args)
    return batching.max_batch if batching is not None else 1


def policy_kind(args: argparse.Namespace) -> str:
    return str(args.policy or ("pi05" if args.checkpoint else "dataset"))


def policy_type(args: argparse.Namespace) -> PolicyType:
    kind = policy_kind(args)
    try:
        return get_policy_type(kind)
    except KeyError:
        raise SystemExit(f"unknown policy {kind}") from None


def _serves_on_cuda(device: str) -> bool:
    from policy_server.pi05_policy import resolve_device

    try:
        return resolve_device(device).type == "cuda"
    except (ValueError, RuntimeError):
        return False  # a bad --device is refused, by name, when the policy is built


def build_batching(args: argparse.Namespace) -> BatchingConfig | None:
    """--max-batch / --batch-wait-ms -> config; None = off (each request runs alone)."""
    max_batch = args.max_batch if args.max_batch is not None else \
        (BatchingConfig.max_batch if policy_type(args).batches_on_cuda and _serves_on_cuda(args.device) else 1)
    if max_batch < 1:
        raise SystemExit(f"--max-batch must be >= 1 (1 = off), got {max_batch}")
    if max_batch == 1:
        return None
    try:
        return BatchingConfig(max_batch=max_batch, max_wait_ms=args.batch_wait_ms,
                              max_queue=max(BatchingConfig.max_queue, max_batch))
    except ValueError as exc:
        raise SystemExit(f"--batch-wait-ms: {exc}") from None


def build_config(args: argparse.Namespace) -> ServerConfig:
    tls = None
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            raise SystemExit("TLS needs both --tls-cert and --tls-key")
        tls = TlsConfig(cert=args.tls_cert, key=args.tls_key, client_ca=args.tls_client_ca)
    elif args.tls_client_ca:
        raise SystemExit("--tls-client-ca needs --tls-cert and --tls-key")
    return ServerConfig(
        host=args.host,
        port=args.port,
        websocket_port=args.websocket_port,
        max_request_bytes=int(args.max_request_mb * 2**20),
        max_response_bytes=int(args.max_request_mb * 2**20),
        tls=tls,
        token=load_token(args.token_file),
        replica_name=args.replica_name,
        batching=build_batching(args),
        max_streams=args.max_streams,
        max_streams_per_client=args.max_streams_per_client,
    )


def serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_redaction()  # before anything logs: no level may show the token (see policy_server.log_redaction)
    config = build_config(args)
    for warning in bind_warnings(config.host, tls=config.tls is not None, token=config.token is not None):
        log.warning("%s", warning)
    try:
        resolve_openpi_checkpoint(args)
        robot = load_robot_facts(args.robot_config) if args.robot_config else None
        checked = robot is not None and _check_policy_config_names(args, robot)
        policy = build_policy(args)
        if robot is not None and not checked:
            check_robot_names(robot, policy.spec.state_names, policy.spec.action_names,
                              f"the {policy.spec.policy_type} policy")
    except (ValueError, RuntimeError, OSError) as exc:
        # Startup refusals (bad checkpoint, stats, config, memory) name their cause; no traceback needed.
        log.error("cannot serve: %s", exc)
        return 1
    server = PolicyServer(policy, config)
    try:
        server.start()
    except RuntimeError as exc:
        log.error("%s", exc)
        return 1
    stop_requested = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal %s: shutting down (grace %.1f s)", signal.Signals(signum).name, config.grace_s)
        stop_requested.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(f"READY grpc={config.host}:{server.port}"
          + (f" websocket={config.host}:{server.websocket.port}" if server.websocket else ""), flush=True)
    while not stop_requested.wait(0.5):
        pass
    server.stop()
    return 0


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable only from this machine (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


def bind_warnings(host: str, *, tls: bool, token: bool) -> list[str]:
    """What binding `host` exposes, one warning per missing protection (the checks launch/serve.sh makes):
    without TLS everything, the token included, crosses the network in clear text; without a token anyone who
    reaches the port is served. Loopback needs neither."""
    if is_loopback(host):
        return []
    warnings = []
    if not tls:
        warnings.append(f"binding {host} without TLS: observations, actions and any token cross the network in "
                        "clear text (use --tls-cert/--tls-key)")
    if not token:
        warnings.append(f"binding {host} without a token: no authentication, anyone who reaches the port can query "
                        "the policy (use --token-file or $POLICY_SERVER_TOKEN)")
    return warnings


def _check_policy_config_names(args: argparse.Namespace, robot: RobotFacts) -> bool:
    """Before any weights load: a pi05 policy's names come from its policy config. False = not a pi05 policy
    (its names are checked once it is built)."""
    if policy_kind(args) != "pi05" or args.checkpoint is None:
        return False
    path = args.policy_config or args.checkpoint / FILE_NAME
    norm = Pi05PolicyConfig.load(path).normalization
    check_robot_names(robot, norm.state_names, norm.action_names, str(path))
    return True


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    if args.command == "config":
        return draft_config(args)
    if args.command == "convert":
        return convert(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
