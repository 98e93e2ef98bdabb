"""The one normalization module shared by the policy server, the oracle, the stats tool and the doctor.

Build a pipeline from a checkpoint dir (stats found by explicit rules, config from `policy_config.json`):

    pipeline = build_pipeline(checkpoint_dir)                 # or build_pipeline(dir, config=NormalizationConfig(...))
    startup_selftest(pipeline, episodes=dataset_episodes)    # refuses data that is not normalized by these stats
    inputs, in_report = pipeline.prepare(state)              # float32 [state_dim] -> model inputs + report
    actions, out_report = pipeline.finish(model_actions, inputs.robot_state)
    in_report.merged(out_report).to_proto()                  # the NormReport a response carries
"""

from policy_norm.checkpoint import (
    POLICY_CONFIG_FILE,
    YAM_STATS_FILE,
    CheckpointNormalization,
    build_pipeline,
    find_openpi_norm_stats,
    load_checkpoint_normalization,
    load_checkpoint_stats,
    read_policy_config,
)
from policy_norm.config import GripperConfig, NormalizationConfig, RangeThresholds
from policy_norm.datacheck import DataCheckResult, DataCheckThresholds, DataFinding, check_data
from policy_norm.errors import (
    NormalizationError,
    NormConfigError,
    NormRangeError,
    NormStatsError,
    SelfTestError,
    StepError,
)
from policy_norm.formats import (
    read_lerobot_stats_json,
    read_openpi_norm_stats,
    read_stats_file,
    read_yam_norm_stats,
    write_openpi_norm_stats,
    write_yam_norm_stats,
)
from policy_norm.lerobot_processor import read_lerobot_processor_stats
from policy_norm.modes import MODE_NAMES, NormMode, parse_mode
from policy_norm.numeric import (
    make_bool_mask,
    normalize,
    quantile_normalize,
    quantile_unnormalize,
    unnormalize,
    zscore_normalize,
    zscore_unnormalize,
)
from policy_norm.pipeline import NormalizationPipeline, NormalizedInputs
from policy_norm.report import DimensionSummary, NormReport, NormWarning, StepRecord
from policy_norm.selftest import RoundTripResult, SelfTestResult, round_trip_selftest, startup_selftest
from policy_norm.stats import FeatureNormStats, NormStats, StatsSource

__all__ = [
    "POLICY_CONFIG_FILE",
    "YAM_STATS_FILE",
    "CheckpointNormalization",
    "DataCheckResult",
    "DataCheckThresholds",
    "DataFinding",
    "DimensionSummary",
    "FeatureNormStats",
    "GripperConfig",
    "MODE_NAMES",
    "NormConfigError",
    "NormMode",
    "NormRangeError",
    "NormReport",
    "NormStats",
    "NormStatsError",
    "NormWarning",
    "NormalizationConfig",
    "NormalizationError",
    "NormalizationPipeline",
    "NormalizedInputs",
    "RangeThresholds",
    "RoundTripResult",
    "SelfTestError",
    "SelfTestResult",
    "StatsSource",
    "StepError",
    "StepRecord",
    "build_pipeline",
    "check_data",
    "find_openpi_norm_stats",
    "load_checkpoint_normalization",
    "load_checkpoint_stats",
    "make_bool_mask",
    "normalize",
    "quantile_normalize",
    "quantile_unnormalize",
    "read_lerobot_processor_stats",
    "read_lerobot_stats_json",
    "read_openpi_norm_stats",
    "read_policy_config",
    "read_stats_file",
    "parse_mode",
    "read_yam_norm_stats",
    "round_trip_selftest",
    "startup_selftest",
    "unnormalize",
    "write_openpi_norm_stats",
    "write_yam_norm_stats",
    "zscore_normalize",
    "zscore_unnormalize",
]
