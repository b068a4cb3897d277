"""The named checks the policy chains are made of, one concern per module. Pure.

What a check sees and may answer is in subject.py; the chains that put the checks in order
(the spec) are in controller/policy.py, which plan.py walks. Modules: store.py (nothing usable
is stored: issue), renewal.py (when and why to renew), njet.py (the running NJet: apply, or
wait for it), validity.py (a pair not valid yet waits), backoff.py (earlier failures hold
an action back), orphan.py (names that left desired state), fallback.py (which CA an order
goes to: [acme]'s, or a [[acme.fallback]] CA), budget.py (the rate-limit budget holds an
order back; ratelimits.py: its arithmetic and the ledger's events). No I/O, no clock, no randomness:
`now` is always passed in.
"""
