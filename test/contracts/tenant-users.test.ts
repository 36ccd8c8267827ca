import t from 'tap'
import { ServiceUser, TENANT_USER_KINDS, TenantId, tenantUser } from '../../contracts/mod.ts'

/** Every substring of `s`: a tenant id that yields the user name `s` is one of them, whatever the naming. */
const substrings = (s: string) => [...s].flatMap((_, i) => [...s].map((_, j) => s.slice(i, j + 1))).filter(Boolean)

t.test('contracts - no valid tenant id gets a NATS user named like a service user', async (t) => {
  // nats-server user names are unique across accounts: one collision and the config is refused.
  const collisions = Object.values(ServiceUser).flatMap((user) =>
    substrings(user)
      .filter((tenant) => TenantId.safeParse(tenant).success)
      .flatMap((tenant) => TENANT_USER_KINDS.filter((kind) => tenantUser(tenant, kind) === user).map((kind) => `tenant ${tenant}'s ${kind} user is the service user ${user}`)),
  )
  t.same(collisions, [], 'no collision for any service user')
  const svc = TenantId.safeParse('svc')
  t.notOk(svc.success, 'tenant "svc" (whose admin would be svc-admin) is refused')
  t.match(svc.error?.issues[0]?.message, /"svc" is reserved.*svc-admin/, 'with a message that says why')
  t.equal(tenantUser('svc-x', 'admin'), 'svc-x-admin', 'names that merely start like one stay valid')
})
