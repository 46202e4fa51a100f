// Where a photo was taken, from its EXIF GPS tags, and the tags that say so.
import exifr from 'exifr';

export interface Location {
  latitude: number;
  longitude: number;
}

/** The EXIF GPS position, or undefined when the image has none (or is not parseable). */
export async function readLocation(content: Buffer): Promise<Location | undefined> {
  let gps: { latitude?: unknown; longitude?: unknown } | undefined;
  try {
    gps = await exifr.gps(content);
  } catch {
    // Not an image exifr understands: no location, which is not an error for tagging.
    return undefined;
  }
  const latitude = gps?.latitude;
  const longitude = gps?.longitude;
  if (typeof latitude !== 'number' || typeof longitude !== 'number') return undefined;
  if (!Number.isFinite(latitude) || !Number.isFinite(longitude)) return undefined;
  if (Math.abs(latitude) > 90 || Math.abs(longitude) > 180) return undefined;
  return { latitude, longitude };
}

/** `gps` plus `geo:<lat>,<lon>` to four decimals (about 11 m), in the image store's tag alphabet. */
export function locationTags(location: Location): string[] {
  return ['gps', `geo:${location.latitude.toFixed(4)},${location.longitude.toFixed(4)}`];
}
