"""Who may call Godel: identities, credentials, roles and the audit log.

- ``permissions``: ``resource:action:scope`` grants, the built-in roles, and the one check (``Principal.may``).
- ``principal``: the caller (a person ``user:NAME`` or an agent's run ``agent:ID``) with its grants.
- ``credentials``, ``tokens``: API keys (argon2id), agent and refresh tokens (SHA-256), access tokens (JWT).
- ``service``: ``AuthService`` — authenticate what a request presented, sessions, agents' run credentials, who owns
  what (for the ``own``/``team``/``all`` scopes) and which events a caller may see.
- ``accounts``: users, their API keys, custom roles, the first administrator.
- ``audit``: the append-only, hash-chained audit log and its verification.
- ``oidc``: single sign-on with OpenID Connect.

The API layer (``godel.api.access``) declares a permission on every route and calls into this package; nothing
here imports FastAPI.
"""
