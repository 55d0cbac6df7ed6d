"""The admin HTTP API (SPEC §5) over the records layer; `routes.admin_routes(ctx)` builds it."""
