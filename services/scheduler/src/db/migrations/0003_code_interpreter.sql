-- The code-interpreter template (@e2b/code-interpreter's default template is `code-interpreter-v1`):
-- base + Jupyter kernels, numpy, pandas, matplotlib; its server starts with the sandbox and is
-- ready before the sandbox is handed out, so it needs more than base. No warm pool by default:
-- each pooled sandbox runs a Python kernel (set pool_target to keep some).
INSERT INTO templates (id, aliases, cpu_count, memory_mib, pool_target)
VALUES ('code-interpreter', '{code-interpreter-v1,code-interpreter}', 2, 1024, 0)
ON CONFLICT (id) DO NOTHING;
