// EXIF GPS extraction on real JPEG bytes.
import { expect } from 'chai';
import { jpegWithGps, jpegWithoutExif } from '../../scripts/fixtures/gps-jpeg.ts';
import { locationTags, readLocation } from './exif-location.ts';

describe('EXIF location', () => {
  it('reads the GPS position of a photo, south and west negative', async () => {
    const paris = await readLocation(jpegWithGps({ latitude: 48.8584, longitude: 2.2945 }));
    expect(paris!.latitude).to.be.closeTo(48.8584, 1e-6);
    expect(paris!.longitude).to.be.closeTo(2.2945, 1e-6);
    const sydney = await readLocation(jpegWithGps({ latitude: -33.8568, longitude: -151.2153 }));
    expect(locationTags(sydney!)).to.deep.equal(['gps', 'geo:-33.8568,-151.2153']);
  });

  it('finds no location in a photo without EXIF or in bytes that are no image', async () => {
    expect(await readLocation(jpegWithoutExif())).to.equal(undefined);
    expect(await readLocation(Buffer.from('not an image at all'))).to.equal(undefined);
  });
});
