"""Hooks and notifications: what an operator is told after a certificate event.

events.py turns a pass's outcomes into CertEvents (issued, renewed, failed, deleted);
observer.py is the PassObserver that does so and hands them to dispatch.py, whose bounded
queues and background workers run the `[hooks]` commands (runner.py) and post the `[notify]`
webhook (webhook.py) off the reconcile's critical path. build.py composes them from a Config
for service.py. Uses no other adapter subpackage.
"""
