"""Builds the hooks and notifications of a Config: service.py's one call into this package.

`build_notifications` returns None when neither `[hooks]` nor `[notify] webhook` is set;
otherwise the observer to add to `Reconciler.observers` and the dispatcher to close at
shutdown. Reads `[notify] secretFile` once, here: a file that cannot be read, or an empty one,
is a ConfigError naming the key and the file (never its content).
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.adapters.hooks.dispatch import SHUTDOWN_GRACE, Dispatcher
from controller.adapters.hooks.observer import HookObserver
from controller.adapters.hooks.runner import HookRunner
from controller.adapters.hooks.webhook import WebhookNotifier
from controller.clock import utc_now
from controller.config import Config
from controller.errors import ConfigError
from controller.metrics import ControllerMetrics
from controller.paths import StorePaths
from controller.ports import CertStore, Clock

MAX_SECRET_BYTES = 4096


@dataclass(frozen=True)
class Notifications:
    observer: HookObserver
    dispatcher: Dispatcher

    async def close(self, grace: float = SHUTDOWN_GRACE) -> None:
        await self.dispatcher.close(grace)


def read_secret(config: Config) -> bytes | None:
    path = config.notify_secret_file
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SECRET_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{config.source}: notify.secretFile: cannot read {path}: "
                          f"{exc.strerror or type(exc).__name__}") from None
    if len(data) > MAX_SECRET_BYTES:
        raise ConfigError(f"{config.source}: notify.secretFile: {path} is longer than "
                          f"{MAX_SECRET_BYTES} bytes")
    secret = data.strip()
    if not secret:
        raise ConfigError(f"{config.source}: notify.secretFile: {path} is empty")
    return secret


def build_notifications(config: Config, *, store: CertStore, paths: StorePaths,
                        metrics: ControllerMetrics | None = None,
                        clock: Clock = utc_now) -> Notifications | None:
    hooks = config.hooks
    commands = {name: argv for name, argv in (("onIssued", hooks.onIssued),
                                              ("onRenewed", hooks.onRenewed),
                                              ("onFailed", hooks.onFailed),
                                              ("onDeleted", hooks.onDeleted)) if argv}
    runner = None
    if commands:
        runner = HookRunner(commands, cwd=config.prefix, timeout=hooks.timeout.total_seconds(),
                            on_result=metrics.observe_hook_run if metrics else None)
    notifier = None
    notify = config.notify
    if notify.webhook:
        notifier = WebhookNotifier(notify.webhook, template=notify.template,
                                   retries=notify.retries,
                                   timeout=notify.timeout.total_seconds(),
                                   secret=read_secret(config),
                                   on_result=metrics.observe_notification if metrics else None)
    if runner is None and notifier is None:
        return None
    dispatcher = Dispatcher(store=store, runner=runner, notifier=notifier)
    return Notifications(HookObserver(dispatcher, paths, clock=clock), dispatcher)
