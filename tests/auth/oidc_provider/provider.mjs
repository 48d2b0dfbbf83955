// A real OpenID Connect provider (panva/oidc-provider) for Godel's single sign-on tests.
//
// Usage: node provider.mjs CONFIG.json   (prints "ready ISSUER" once it listens)
// CONFIG: {"port": 1234, "clients": [...], "claimsFile": "/path/claims.json", "conformIdTokenClaims": true}
// The claims file maps an account id to its claims ({"alice": {"groups": ["godel-admins"]}}); it is read at every
// login, so a test changes a user's groups between two logins by rewriting it. The development interactions sign
// in any account name with any password, then ask for consent.
import { generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';

import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const issuer = `http://127.0.0.1:${config.port}`;
const signingKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });

function claimsOf(accountId) {
  const all = JSON.parse(readFileSync(config.claimsFile, 'utf8'));
  return all[accountId] || {};
}

const provider = new Provider(issuer, {
  clients: config.clients,
  jwks: { keys: [{ ...signingKey, kid: 'test-key-1', use: 'sig', alg: 'RS256' }] },
  cookies: { keys: ['godel-test-cookie-key'] },
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
    team: ['team'],
  },
  scopes: ['openid', 'offline_access', 'profile', 'email', 'groups', 'team'],
  conformIdTokenClaims: config.conformIdTokenClaims !== false,
  pkce: { required: () => true, methods: ['S256'] },
  features: { devInteractions: { enabled: true } },
  async findAccount(ctx, id) {
    return { accountId: id, async claims() { return { sub: id, ...claimsOf(id) }; } };
  },
});
provider.proxy = false;

provider.listen(config.port, '127.0.0.1', () => {
  process.stdout.write(`ready ${issuer}\n`);
});
