"""The command lines' shared behaviour: quiet terminals with a detailed log file (:mod:`.logs`), one-line user
errors with exit status 2 (:mod:`.errors`), ``--help`` with the config fields (:mod:`.config_help`) and the
closing summary of outputs and headline numbers (:mod:`.summary`, :mod:`.outputs`); :func:`run_cli`
(:mod:`.app`) puts them around each CLI's ``main``."""
from rlvr_jax.cli.app import HelpConfig, current_logs, run_cli  # noqa: F401
from rlvr_jax.cli.errors import UserError  # noqa: F401
from rlvr_jax.cli.summary import Summary  # noqa: F401
