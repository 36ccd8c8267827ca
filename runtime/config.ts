import { z } from 'zod'

export class ConfigError extends Error {
  override name = 'ConfigError'
}

/**
 * Reads a process's config from environment variables. `vars` maps each config key to its
 * variable name; the schema supplies defaults and units. A bad value fails with every problem
 * named by its variable.
 */
export function loadConfig<S extends z.ZodObject>(
  schema: S,
  vars: Record<keyof z.infer<S> & string, string>,
  env: NodeJS.ProcessEnv = process.env,
): z.infer<S> {
  const raw: Record<string, string> = {}
  for (const [key, name] of Object.entries(vars) as [string, string][]) {
    const value = env[name]
    if (value !== undefined && value !== '') raw[key] = value
  }
  const parsed = schema.safeParse(raw)
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => {
      const key = String(i.path[0] ?? '')
      const name = (vars as Record<string, string>)[key] ?? key
      return `  ${name}=${JSON.stringify(raw[key] ?? '')}: ${i.message}`
    })
    throw new ConfigError(`invalid configuration:\n${lines.join('\n')}`)
  }
  return parsed.data
}

/** loadConfig for a process entry point: a bad value prints what is wrong and exits 2. */
export function loadConfigOrExit<S extends z.ZodObject>(schema: S, vars: Record<keyof z.infer<S> & string, string>): z.infer<S> {
  try {
    return loadConfig(schema, vars)
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err
    process.stderr.write(`${err.message}\n`)
    process.exit(2)
  }
}

/** Port numbers from the environment. */
export const Port = z.coerce.number().int().min(0).max(65_535)
/** Positive integer from the environment (ms, bytes, counts). */
export const PositiveInt = z.coerce.number().int().positive()

/** Dev default for DOCFLOW_JWT_SECRET; production refuses to run with it. */
export const DEV_JWT_SECRET = 'docflow-dev-secret-do-not-use-in-production'

export const JwtSecret = z
  .string()
  .min(16, 'at least 16 characters')
  .default(DEV_JWT_SECRET)
  .refine((s) => s !== DEV_JWT_SECRET || process.env.NODE_ENV !== 'production', 'DOCFLOW_JWT_SECRET must be set when NODE_ENV=production')
