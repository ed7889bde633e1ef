/**
 * google-auth-library, loaded only by the roles and modes that need it (it is large, and most
 * starts never call Google). It is CommonJS: bundled, its exports arrive on `default`.
 */
export async function loadGoogleAuthLibrary(): Promise<typeof import('google-auth-library')> {
  const loaded = await import('google-auth-library');
  return 'GoogleAuth' in loaded && loaded.GoogleAuth
    ? loaded
    : (loaded as unknown as { default: typeof loaded }).default;
}
