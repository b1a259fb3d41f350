"""The symbolic half of ntkhgm: annihilators → Pfaffian systems (docs/math.md §3–§5).

- :mod:`.annihilator` — strict grammar for annihilator strings, Weyl normal form (§3)
- :mod:`.expr` — restricted parser for polynomial / rational-function text
- :mod:`.sigma_expr` — safe σ expressions of user activations (initial values, §5)
- :mod:`.weyl` — rational Weyl algebra, normal forms, Pfaffian matrices (§4)
- :mod:`.backends` — Risa/Asir and Singular drivers (pexpect sessions) (§4)
- :mod:`.pfaffian` — :class:`~.pfaffian.PfaffianSystem` and its JSON schema (§4, §5)
- :mod:`.cache` — ``load_pfaffian`` / ``store_pfaffian`` / ``compute_pfaffian``

Nothing here imports :mod:`ntkhgm.numeric`; numeric checks live in :mod:`ntkhgm.checks`.
Submodules are imported on demand, so loading a shipped Pfaffian stays cheap.
"""
