// GraphQL Codegen for a PMS (practice management system) web client: typed operations from the
// `.graphql` files beside this one, checked against caregraph's committed schema, plus the
// trusted-documents manifest `gql/persisted-documents.json` that caregraph loads with
// CAREGRAPH_TRUSTED_DOCUMENTS.
//
//   npm install --save-dev @graphql-codegen/cli @graphql-codegen/client-preset graphql
//   npx graphql-codegen --config codegen.ts
//
// (Not run in caregraph's tests; `examples/pms/persisted-documents.json` is this config's output,
// and `caregraph documents check` keeps it honest.)
import type { CodegenConfig } from '@graphql-codegen/cli';

const config: CodegenConfig = {
  // Or `caregraph schema --json > schema.json` / a running server's URL (introspection on).
  schema: '../../schema.graphql',
  documents: ['./*.graphql'],
  ignoreNoDocuments: false,
  generates: {
    './gql/': {
      preset: 'client',
      presetConfig: {
        // Emits gql/persisted-documents.json: { "sha256:<hex>": "<document>" }. The generated
        // documents carry the hash; the client sends it as `documentId` instead of the query.
        persistedDocuments: true,
      },
    },
  },
};

export default config;
