// A real, certified OpenID Provider (panva's oidc-provider) on a loopback port of the system's
// choosing, for tests/it/oidc_provider.rs: opaque access tokens for the client credentials
// grant, RFC 7662 introspection and RFC 7009 revocation. Prints {"issuer": "..."} once it listens.
import http from 'node:http';
import Provider from 'oidc-provider';

// Each client's tokens are for its own API (RFC 8707 resource indicators): the audience
// jwtgate checks.
const resources = {
  'orders-app': 'https://orders.example/api',
  'billing-app': 'https://billing.example/api',
};

const server = http.createServer();
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients: [
      { client_id: 'orders-app', client_secret: 'orders-secret', grant_types: ['client_credentials'], redirect_uris: [], response_types: [], scope: 'orders:read orders:write' },
      { client_id: 'billing-app', client_secret: 'billing-secret', grant_types: ['client_credentials'], redirect_uris: [], response_types: [], scope: 'orders:read' },
      // The resource server: it may only introspect.
      { client_id: 'jwtgate', client_secret: process.env.JWTGATE_SECRET, grant_types: [], redirect_uris: [], response_types: [] },
    ],
    scopes: ['orders:read', 'orders:write'],
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: (ctx, client) => resources[client.clientId],
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resource) => ({
          scope: 'orders:read orders:write',
          audience: resource,
          accessTokenFormat: 'opaque',
          accessTokenTTL: 600,
        }),
      },
    },
  });
  server.on('request', provider.callback());
  console.log(JSON.stringify({ issuer }));
});
